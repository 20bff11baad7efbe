//! DNS reply validation: whatever arrives on a resolver socket is judged without panicking, and
//! nothing is accepted unless it carries the query's id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::discovery::message::Reply;
use ringway::discovery::message::{judge_reply, Question, RecordType, ANSWER_ADDRESSES_MAX};

fuzz_target!(|data: &[u8]| {
    for record_type in [RecordType::A, RecordType::AAAA] {
        let question = Question::new(0x1234, "api.default.svc.cluster.local.", record_type)
            .expect("a valid name");
        if let Ok(reply) = judge_reply(data, &question) {
            assert_eq!(&data[..2], &[0x12, 0x34]);
            if let Reply::Addresses { ips, .. } = reply {
                assert!(!ips.is_empty() && ips.len() <= ANSWER_ADDRESSES_MAX);
            }
        }
    }
});
