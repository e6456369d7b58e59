//! Links and addresses over rtnetlink (what `ip link` and `ip addr` do):
//! looking an interface up by name, its byte counters, a veth pair whose
//! peer is created straight into another network namespace, link up/down,
//! and an address on an interface.
//!
//! A veth pair with its two ends in two namespaces is made the way `ip
//! link add A netns X type veth peer name B netns Y` makes it, from the
//! namespace of this connection: the peer's half of the request carries
//! `IFLA_NET_NS_FD`, an open descriptor of the other namespace (a file
//! under `/run/netns`), so the kernel creates it there.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{AddressMessageBuilder, LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::{RouteError, RouteNetlink, RouteOp};

/// A veth pair to create (`ip link add NAME type veth peer name PEER`).
#[derive(Clone, Copy, Debug)]
pub struct Veth<'a> {
    /// This end's name, in the connection's namespace.
    pub name: &'a str,
    /// The other end's name.
    pub peer: &'a str,
    /// The namespace the other end is created in (an open `/run/netns`
    /// file or `/proc/PID/ns/net`); `None`: the connection's own.
    pub peer_netns: Option<BorrowedFd<'a>>,
}

/// Byte counters of an interface (`IFLA_STATS64`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkBytes {
    /// Bytes received.
    pub rx: u64,
    /// Bytes sent.
    pub tx: u64,
}

fn up_down<T>(b: LinkMessageBuilder<T>, up: bool) -> LinkMessageBuilder<T> {
    if up {
        b.up()
    } else {
        b.down()
    }
}

impl Veth<'_> {
    fn message(&self) -> LinkMessage {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(self.peer);
        if let Some(fd) = self.peer_netns {
            // The descriptor only has to stay open until the kernel has
            // read the request: `self` borrows it for longer.
            peer = peer.setns_by_fd(fd.as_raw_fd());
        }
        LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(self.name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build()
    }
}

impl RouteNetlink {
    async fn get_link(&self, name: &str) -> Result<LinkMessage, RouteError> {
        let op = RouteOp::GetLink(name.to_owned());
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = self
            .request(&op, RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST)
            .await?;
        replies
            .into_iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(m),
                _ => None,
            })
            // The kernel answers a lookup with the link or ENODEV; no
            // answer at all is the same as none.
            .ok_or_else(|| RouteError::Kernel {
                op: Box::new(op),
                errno: libc::ENODEV,
                msg: String::new(),
            })
    }

    /// The index of the interface called `name` (`ENODEV` if none).
    pub async fn link_index(&self, name: &str) -> Result<u32, RouteError> {
        self.get_link(name).await.map(|m| m.header.index)
    }

    /// Whether the interface called `name` is administratively up.
    pub async fn link_is_up(&self, name: &str) -> Result<bool, RouteError> {
        self.get_link(name)
            .await
            .map(|m| m.header.flags.contains(LinkFlags::Up))
    }

    /// The byte counters of the interface called `name`.
    pub async fn link_bytes(&self, name: &str) -> Result<LinkBytes, RouteError> {
        let m = self.get_link(name).await?;
        Ok(m.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Stats64(s) => Some(LinkBytes {
                    rx: s.rx_bytes,
                    tx: s.tx_bytes,
                }),
                _ => None,
            })
            .unwrap_or_default())
    }

    /// Creates a veth pair, both ends down (`EEXIST` if a name is taken).
    /// They cannot be created up: the kernel brings the peer up before it
    /// has paired the two, and refuses (`ENOTCONN`, `veth_open`).
    pub async fn add_veth(&self, veth: &Veth<'_>) -> Result<(), RouteError> {
        self.request(
            &RouteOp::AddVeth {
                name: veth.name.to_owned(),
                peer: veth.peer.to_owned(),
            },
            RouteNetlinkMessage::NewLink(veth.message()),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(drop)
    }

    /// Sets interface `index` up or down (`ip link set DEV up|down`).
    pub async fn set_link_up(&self, index: u32, up: bool) -> Result<(), RouteError> {
        let m = up_down(LinkUnspec::new_with_index(index), up).build();
        self.request(
            &RouteOp::SetLink { index, up },
            RouteNetlinkMessage::SetLink(m),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }

    /// Adds `addr/prefix_len` to interface `index` (`ip addr add`; an IPv4
    /// address gets its subnet's broadcast address). `EEXIST` if it is
    /// there already.
    pub async fn add_address(
        &self,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), RouteError> {
        let m = address_message(index, addr, prefix_len);
        self.request(
            &RouteOp::AddAddress {
                index,
                addr,
                prefix_len,
            },
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(drop)
    }
}

fn address_message(index: u32, addr: IpAddr, prefix_len: u8) -> AddressMessage {
    match addr {
        IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(index)
            .address(a, prefix_len)
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
            .index(index)
            .address(a, prefix_len)
            .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::AddressFamily;

    #[test]
    fn veth_peer_carries_the_namespace() {
        let f = std::fs::File::open("/proc/self/ns/net").unwrap();
        let v = Veth {
            name: "dsl0",
            peer: "cpe0",
            peer_netns: Some(std::os::fd::AsFd::as_fd(&f)),
        };
        let m = v.message();
        assert!(m.attributes.contains(&LinkAttribute::IfName("dsl0".into())));
        let peer = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    rtnetlink::packet_route::link::LinkInfo::Data(InfoData::Veth(
                        InfoVeth::Peer(p),
                    )) => Some(p.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .expect("a veth peer");
        assert!(peer
            .attributes
            .contains(&LinkAttribute::IfName("cpe0".into())));
        assert!(peer
            .attributes
            .contains(&LinkAttribute::NetNsFd(f.as_raw_fd())));
    }

    #[test]
    fn addresses_carry_local_and_broadcast() {
        let m = address_message(3, "10.64.1.2".parse().unwrap(), 24);
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert_eq!((m.header.index, m.header.prefix_len), (3, 24));
        assert!(m
            .attributes
            .contains(&AddressAttribute::Local("10.64.1.2".parse().unwrap())));
        assert!(m
            .attributes
            .contains(&AddressAttribute::Broadcast("10.64.1.255".parse().unwrap())));
    }
}
