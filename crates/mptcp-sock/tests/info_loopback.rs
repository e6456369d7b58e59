//! MPTCP_INFO and per-subflow counters on a real MPTCP connection over
//! loopback (needs a kernel with MPTCP enabled; skipped otherwise).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use mptcp_sock::{info, listen, ListenOptions};

#[test]
fn counters_follow_the_bytes() {
    let Ok((listener, true)) = listen(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &ListenOptions::default(),
    ) else {
        eprintln!("skipped: no MPTCP on this kernel");
        return;
    };
    listener.set_nonblocking(false).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 100_000];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf[..50_000]).unwrap();
        s
    });
    let (c, is_mptcp) = mptcp_sock::connect_fastopen(
        addr,
        &mptcp_sock::ConnectOptions {
            mptcp: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(is_mptcp);
    c.set_nonblocking(false).unwrap();
    let mut c: TcpStream = c;
    // Non-blocking connect: wait until writable by writing in blocking mode.
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.write_all(&vec![7u8; 100_000]).unwrap();
    let mut back = vec![0u8; 50_000];
    c.read_exact(&mut back).unwrap();
    let _s = server.join().unwrap();
    let i = info::mptcp_info(&c).unwrap();
    assert!(i.bytes_received >= 50_000, "{i:?}");
    assert!(i.bytes_acked >= 100_000 || i.bytes_sent >= 100_000, "{i:?}");
    let subs = info::subflows(&c).unwrap();
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(subs[0].remote, addr);
    assert!(subs[0].bytes_received >= 50_000, "{subs:?}");
    assert!(subs[0].bytes_acked >= 100_000, "{subs:?}");
}
