//! libFuzzer target: arbitrary bytes as a checkpoint file. Both parsers must return a
//! checkpoint or `Error::Checkpoint`, never panic; a verified load must survive a
//! save / load round trip unchanged.
#![no_main]

use halfgrad::checkpoint::Checkpoint;
use halfgrad::Error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Checkpoint::from_bytes_unverified(data, "fuzz") {
        Ok(_) | Err(Error::Checkpoint { .. }) => {}
        Err(e) => panic!("unverified parse: unexpected error type {e:?}"),
    }
    match Checkpoint::from_bytes(data, "fuzz") {
        Ok(c) => {
            let again = c.to_bytes().expect("a loaded checkpoint serialises");
            let reloaded = Checkpoint::from_bytes(&again, "fuzz").expect("and loads again");
            assert_eq!(reloaded, c);
        }
        Err(Error::Checkpoint { .. }) => {}
        Err(e) => panic!("verified parse: unexpected error type {e:?}"),
    }
});
