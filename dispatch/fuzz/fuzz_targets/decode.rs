//! Fuzz target: `codec::decode` must return `Ok` or `Err` for any bytes, never panic,
//! and a decoded message must re-encode to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voltex_dispatch::codec::{decode, encode_binary, encode_json};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(message) = decode(bytes) {
        let binary = encode_binary(&message).expect("a decoded message is valid");
        assert_eq!(decode(&binary).as_ref(), Ok(&message));
        let json = encode_json(&message).expect("a decoded message is valid");
        assert_eq!(decode(&json).as_ref(), Ok(&message));
    }
});
