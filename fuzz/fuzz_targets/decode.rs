//! Decode arbitrary bytes; anything that decodes must re-encode to a message
//! that decodes to the same value and the same length.
#![no_main]

use convert_proto::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((msg, used)) = Message::decode(data) {
        assert!(used <= data.len());
        let wire = msg.to_bytes();
        assert_eq!(wire.len(), msg.encoded_len());
        let (again, used2) = Message::decode(&wire).expect("re-encoded message must decode");
        assert_eq!(again, msg);
        assert_eq!(used2, wire.len());
    }
});
