//! Instructions (OpenFlow 1.3.5 §7.2.4).
//!
//! A flow's instructions form a set, run in a fixed order whatever order
//! they were listed in (§5.9): meter, apply-actions, clear-actions,
//! write-actions, write-metadata, goto-table. OVS reports them in that
//! order, so decoding sorts them the same way ([`sort_instructions`]) and a
//! dumped flow compares equal to the flow_mod that made it.

use bytes::BufMut;

use crate::action::{Action, decode_actions, encode_actions};
use crate::wire::{DecodeError, EncodeError, Reader, patch_len};

const OFPIT_GOTO_TABLE: u16 = 1;
const OFPIT_WRITE_METADATA: u16 = 2;
const OFPIT_WRITE_ACTIONS: u16 = 3;
const OFPIT_APPLY_ACTIONS: u16 = 4;
const OFPIT_CLEAR_ACTIONS: u16 = 5;
const OFPIT_METER: u16 = 6;

/// One instruction of a flow. A flow without instructions drops packets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// Continue processing in a later table.
    GotoTable(u8),
    /// Set the metadata register bits selected by `mask`.
    WriteMetadata { metadata: u64, mask: u64 },
    /// Merge actions into the action set, run at the end of the pipeline.
    WriteActions(Vec<Action>),
    /// Run actions now, in order.
    ApplyActions(Vec<Action>),
    /// Empty the action set.
    ClearActions,
    /// Send the packet through a meter.
    Meter(u32),
    /// Any other instruction (experimenter ones included), `body` being
    /// everything after type and length.
    Unknown {
        instruction_type: u16,
        body: Vec<u8>,
    },
}

impl Instruction {
    /// Rank in the execution order of §5.9; unknown ones go last.
    fn rank(&self) -> u8 {
        match self {
            Instruction::Meter(_) => 0,
            Instruction::ApplyActions(_) => 1,
            Instruction::ClearActions => 2,
            Instruction::WriteActions(_) => 3,
            Instruction::WriteMetadata { .. } => 4,
            Instruction::GotoTable(_) => 5,
            Instruction::Unknown { .. } => 6,
        }
    }

    /// Appends the instruction; every form is a multiple of 8 already.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let instruction_type = match self {
            Instruction::GotoTable(_) => OFPIT_GOTO_TABLE,
            Instruction::WriteMetadata { .. } => OFPIT_WRITE_METADATA,
            Instruction::WriteActions(_) => OFPIT_WRITE_ACTIONS,
            Instruction::ApplyActions(_) => OFPIT_APPLY_ACTIONS,
            Instruction::ClearActions => OFPIT_CLEAR_ACTIONS,
            Instruction::Meter(_) => OFPIT_METER,
            Instruction::Unknown {
                instruction_type, ..
            } => *instruction_type,
        };
        out.put_u16(instruction_type);
        out.put_u16(0);
        match self {
            Instruction::GotoTable(table) => {
                out.put_u8(*table);
                out.put_bytes(0, 3);
            }
            Instruction::WriteMetadata { metadata, mask } => {
                out.put_bytes(0, 4);
                out.put_u64(*metadata);
                out.put_u64(*mask);
            }
            Instruction::WriteActions(actions) | Instruction::ApplyActions(actions) => {
                out.put_bytes(0, 4);
                encode_actions(actions, out)?;
            }
            Instruction::ClearActions => out.put_bytes(0, 4),
            Instruction::Meter(id) => out.put_u32(*id),
            Instruction::Unknown { body, .. } => out.put_slice(body),
        }
        let len = out.len() - start;
        patch_len(out, start + 2, "instruction", len)
    }

    /// Reads one instruction.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Instruction, DecodeError> {
        let instruction_type = r.u16()?;
        let len = usize::from(r.u16()?);
        if len < 4 {
            return Err(r.bad_length(len));
        }
        let mut body = r.sub(len - 4, "instruction")?;
        let fixed = |want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(DecodeError::Invalid {
                    what: "instruction",
                    detail: format!(
                        "type {instruction_type} has length {len}, the spec says {want}"
                    ),
                })
            }
        };
        let instruction = match instruction_type {
            OFPIT_GOTO_TABLE => {
                fixed(8)?;
                Instruction::GotoTable(body.u8()?)
            }
            OFPIT_WRITE_METADATA => {
                fixed(24)?;
                body.skip(4)?;
                Instruction::WriteMetadata {
                    metadata: body.u64()?,
                    mask: body.u64()?,
                }
            }
            OFPIT_WRITE_ACTIONS | OFPIT_APPLY_ACTIONS => {
                body.skip(4)?;
                let mut actions_r = Reader::new(body.rest(), "action list");
                let actions = decode_actions(&mut actions_r)?;
                if instruction_type == OFPIT_WRITE_ACTIONS {
                    Instruction::WriteActions(actions)
                } else {
                    Instruction::ApplyActions(actions)
                }
            }
            OFPIT_CLEAR_ACTIONS => {
                fixed(8)?;
                Instruction::ClearActions
            }
            OFPIT_METER => {
                fixed(8)?;
                Instruction::Meter(body.u32()?)
            }
            _ => Instruction::Unknown {
                instruction_type,
                body: body.rest().to_vec(),
            },
        };
        Ok(instruction)
    }
}

/// Sorts instructions into execution order (§5.9), the order OVS reports.
/// The sort is stable, so repeated unknown instructions keep their order.
pub fn sort_instructions(instructions: &mut [Instruction]) {
    instructions.sort_by_key(Instruction::rank);
}

/// Appends a list of instructions.
pub(crate) fn encode_instructions(
    instructions: &[Instruction],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    instructions.iter().try_for_each(|i| i.encode(out))
}

/// Reads instructions until the reader is empty, in execution order.
pub(crate) fn decode_instructions(r: &mut Reader<'_>) -> Result<Vec<Instruction>, DecodeError> {
    let mut instructions = Vec::new();
    while !r.is_empty() {
        instructions.push(Instruction::decode(r)?);
    }
    sort_instructions(&mut instructions);
    Ok(instructions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(i: &Instruction) -> (Vec<u8>, Instruction) {
        let mut out = Vec::new();
        i.encode(&mut out).expect("encode");
        assert_eq!(out.len() % 8, 0);
        let mut r = Reader::new(&out, "t");
        let back = Instruction::decode(&mut r).expect("decode");
        assert!(r.is_empty());
        (out, back)
    }

    #[test]
    fn every_instruction_round_trips() {
        let all = [
            Instruction::GotoTable(60),
            Instruction::WriteMetadata {
                metadata: 0x1234,
                mask: 0xffff,
            },
            Instruction::WriteActions(vec![Action::output(1)]),
            Instruction::ApplyActions(vec![Action::set_vlan_vid(5), Action::normal()]),
            Instruction::ApplyActions(vec![]),
            Instruction::ClearActions,
            Instruction::Meter(3),
            Instruction::Unknown {
                instruction_type: 0xffff,
                body: vec![0, 0, 0x23, 0x20],
            },
        ];
        for i in all {
            assert_eq!(round_trip(&i).1, i);
        }
    }

    #[test]
    fn known_bytes() {
        assert_eq!(
            round_trip(&Instruction::GotoTable(60)).0,
            [0, 1, 0, 8, 60, 0, 0, 0]
        );
        let (bytes, _) = round_trip(&Instruction::ApplyActions(vec![Action::normal()]));
        assert_eq!(&bytes[..8], [0, 4, 0, 24, 0, 0, 0, 0]);
    }

    #[test]
    fn decoding_sorts_into_execution_order() {
        let mut out = Vec::new();
        encode_instructions(
            &[
                Instruction::GotoTable(1),
                Instruction::ApplyActions(vec![Action::PopVlan]),
            ],
            &mut out,
        )
        .expect("encode");
        let back = decode_instructions(&mut Reader::new(&out, "t")).expect("decode");
        assert_eq!(
            back,
            [
                Instruction::ApplyActions(vec![Action::PopVlan]),
                Instruction::GotoTable(1)
            ]
        );
    }
}
