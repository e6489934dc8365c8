//! What an ovs-vswitchd sends on an OpenFlow connection: the byte stream,
//! cut into reads of a size the first byte picks, framed and decoded. Must
//! end in messages or a decode error, never a panic; and every message
//! that decodes and encodes again decodes to itself. The typed views of
//! Nicira actions (learn, move, load) never panic either, and one that
//! reads rebuilds an action that reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ovslab_openflow::{Action, FrameDecoder, Instruction, Message, MultipartReplyBody};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::new();
    for read in stream.chunks(chunk) {
        decoder.extend(read);
        loop {
            match decoder.next_message() {
                Ok(Some((xid, message))) => check(xid, &message),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

fn check(xid: u32, message: &Message) {
    match message {
        Message::Error(error) => {
            let _ = (error.to_string(), error.failed_xid(), error.failed_type());
        }
        Message::FlowMod(flow_mod) => {
            let _ = flow_mod.to_string();
            check_views(&flow_mod.instructions);
        }
        Message::MultipartReply(reply) => {
            if let MultipartReplyBody::Flow(flows) = &reply.body {
                for flow in flows {
                    let _ = flow.to_string();
                    check_views(&flow.instructions);
                }
            }
        }
        _ => {}
    }
    // A message too large to encode again (padding can grow it) is fine.
    // One that encodes must decode, and from then on encoding and decoding
    // must be each other's inverse. Not decode(encode(m)) == m for the
    // message read first: a peer may send an action or instruction whose
    // length is not padded to 8 (§7.2.5 asks for it; OVS always pads), and
    // its decoded body then gains the padding our encoder adds.
    let Ok(bytes) = message.encode(xid) else {
        return;
    };
    let again = Message::decode(&bytes).expect("our own encoding decodes");
    assert_eq!(again.0, xid);
    let bytes_again = again.1.encode(xid).expect("a decoded encoding encodes");
    assert_eq!(bytes_again, bytes, "encode(decode(encode(m))) == encode(m)");
}

fn check_views(instructions: &[Instruction]) {
    for instruction in instructions {
        let (Instruction::ApplyActions(actions) | Instruction::WriteActions(actions)) = instruction
        else {
            continue;
        };
        for action in actions {
            if let Some(learn) = action.as_learn() {
                assert_eq!(Action::learn(&learn).as_learn(), Some(learn));
            }
            if let Some(m) = action.as_reg_move() {
                assert_eq!(Action::reg_move(&m).as_reg_move(), Some(m));
            }
            if let Some(l) = action.as_reg_load() {
                assert_eq!(Action::reg_load(&l).as_reg_load(), Some(l));
            }
        }
    }
}
