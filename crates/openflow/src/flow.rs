//! Flow entries on the wire: FLOW_MOD (OpenFlow 1.3.5 §7.3.4.1) and the
//! flow statistics multipart request and reply (§7.3.5.2).

use bytes::BufMut;

use crate::action::Action;
use crate::consts::{OFP_NO_BUFFER, OFPG_ANY, OFPP_ANY, OFPTT_ALL};
use crate::instruction::{
    Instruction, decode_instructions, encode_instructions, sort_instructions,
};
use crate::oxm::Match;
use crate::wire::{DecodeError, EncodeError, Reader};

/// What a flow_mod does (`ofp_flow_mod_command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowModCommand {
    /// Add a flow, replacing one with the same match and priority.
    Add,
    /// Modify the instructions of every flow the match covers.
    Modify,
    /// Modify the flow with exactly this match and priority.
    ModifyStrict,
    /// Delete every flow the match covers (filtered by cookie, out_port).
    Delete,
    /// Delete the flow with exactly this match and priority.
    DeleteStrict,
}

impl FlowModCommand {
    fn to_wire(self) -> u8 {
        match self {
            FlowModCommand::Add => 0,
            FlowModCommand::Modify => 1,
            FlowModCommand::ModifyStrict => 2,
            FlowModCommand::Delete => 3,
            FlowModCommand::DeleteStrict => 4,
        }
    }

    fn from_wire(v: u8) -> Option<FlowModCommand> {
        Some(match v {
            0 => FlowModCommand::Add,
            1 => FlowModCommand::Modify,
            2 => FlowModCommand::ModifyStrict,
            3 => FlowModCommand::Delete,
            4 => FlowModCommand::DeleteStrict,
            _ => return None,
        })
    }

    /// The ovs-ofctl verb, used by `Display`.
    pub fn name(self) -> &'static str {
        match self {
            FlowModCommand::Add => "add",
            FlowModCommand::Modify => "modify",
            FlowModCommand::ModifyStrict => "modify_strict",
            FlowModCommand::Delete => "delete",
            FlowModCommand::DeleteStrict => "delete_strict",
        }
    }
}

/// A FLOW_MOD message. Build with [`FlowMod::add`], [`FlowMod::delete_strict`],
/// [`FlowMod::delete_by_cookie`], … and the `with_*` methods.
///
/// `cookie_mask` only matters for modify and delete: it selects the cookie
/// bits that must equal `cookie` (§7.3.4.1). `out_port`/`out_group` filter
/// deletes and are [`OFPP_ANY`]/[`OFPG_ANY`] by default.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowMod {
    pub command: FlowModCommand,
    pub cookie: u64,
    pub cookie_mask: u64,
    pub table_id: u8,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub buffer_id: u32,
    pub out_port: u32,
    pub out_group: u32,
    /// `OFPFF_*` bits.
    pub flags: u16,
    pub match_: Match,
    pub instructions: Vec<Instruction>,
}

/// Actions as instructions: none means drop, otherwise one apply-actions.
fn apply(actions: Vec<Action>) -> Vec<Instruction> {
    if actions.is_empty() {
        Vec::new()
    } else {
        vec![Instruction::ApplyActions(actions)]
    }
}

impl FlowMod {
    fn new(command: FlowModCommand, table_id: u8, priority: u16, match_: Match) -> FlowMod {
        FlowMod {
            command,
            cookie: 0,
            cookie_mask: 0,
            table_id,
            idle_timeout: 0,
            hard_timeout: 0,
            priority,
            buffer_id: OFP_NO_BUFFER,
            out_port: OFPP_ANY,
            out_group: OFPG_ANY,
            flags: 0,
            match_,
            instructions: Vec::new(),
        }
    }

    /// Adds a flow applying `actions`; no actions means drop.
    pub fn add(table_id: u8, priority: u16, match_: Match, actions: Vec<Action>) -> FlowMod {
        FlowMod::new(FlowModCommand::Add, table_id, priority, match_)
            .with_instructions(apply(actions))
    }

    /// Replaces the actions of the flow with exactly this match and priority.
    pub fn modify_strict(
        table_id: u8,
        priority: u16,
        match_: Match,
        actions: Vec<Action>,
    ) -> FlowMod {
        FlowMod::new(FlowModCommand::ModifyStrict, table_id, priority, match_)
            .with_instructions(apply(actions))
    }

    /// Deletes the one flow with exactly this table, match and priority.
    pub fn delete_strict(table_id: u8, priority: u16, match_: Match) -> FlowMod {
        FlowMod::new(FlowModCommand::DeleteStrict, table_id, priority, match_)
    }

    /// Deletes every flow of `table_id` ([`OFPTT_ALL`] for all tables) that
    /// `match_` covers.
    pub fn delete(table_id: u8, match_: Match) -> FlowMod {
        FlowMod::new(FlowModCommand::Delete, table_id, 0, match_)
    }

    /// Deletes every flow, in every table, whose cookie is exactly `cookie`.
    pub fn delete_by_cookie(cookie: u64) -> FlowMod {
        FlowMod::delete(OFPTT_ALL, Match::new()).with_cookie_match(cookie, u64::MAX)
    }

    /// Sets the cookie stored with an added flow.
    pub fn with_cookie(mut self, cookie: u64) -> FlowMod {
        self.cookie = cookie;
        self
    }

    /// Restricts a modify or delete to flows whose cookie bits under
    /// `mask` equal `cookie`.
    pub fn with_cookie_match(mut self, cookie: u64, mask: u64) -> FlowMod {
        self.cookie = cookie;
        self.cookie_mask = mask;
        self
    }

    /// Replaces the instructions, sorted into execution order (§5.9) so the
    /// flow_mod equals what OVS dumps back.
    pub fn with_instructions(mut self, mut instructions: Vec<Instruction>) -> FlowMod {
        sort_instructions(&mut instructions);
        self.instructions = instructions;
        self
    }

    pub fn with_timeouts(mut self, idle_timeout: u16, hard_timeout: u16) -> FlowMod {
        self.idle_timeout = idle_timeout;
        self.hard_timeout = hard_timeout;
        self
    }

    /// Sets the `OFPFF_*` flags.
    pub fn with_flags(mut self, flags: u16) -> FlowMod {
        self.flags = flags;
        self
    }

    /// Restricts a delete to flows that output to `port`.
    pub fn with_out_port(mut self, port: u32) -> FlowMod {
        self.out_port = port;
        self
    }

    /// The body after the OpenFlow header.
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.put_u64(self.cookie);
        out.put_u64(self.cookie_mask);
        out.put_u8(self.table_id);
        out.put_u8(self.command.to_wire());
        out.put_u16(self.idle_timeout);
        out.put_u16(self.hard_timeout);
        out.put_u16(self.priority);
        out.put_u32(self.buffer_id);
        out.put_u32(self.out_port);
        out.put_u32(self.out_group);
        out.put_u16(self.flags);
        out.put_bytes(0, 2);
        self.match_.encode(out)?;
        encode_instructions(&self.instructions, out)
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<FlowMod, DecodeError> {
        let cookie = r.u64()?;
        let cookie_mask = r.u64()?;
        let table_id = r.u8()?;
        let command = r.u8()?;
        let command = FlowModCommand::from_wire(command)
            .ok_or_else(|| r.invalid(format!("unknown command {command}")))?;
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let priority = r.u16()?;
        let buffer_id = r.u32()?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        let flags = r.u16()?;
        r.skip(2)?;
        let match_ = Match::decode(r)?;
        let instructions = decode_instructions(r)?;
        Ok(FlowMod {
            command,
            cookie,
            cookie_mask,
            table_id,
            idle_timeout,
            hard_timeout,
            priority,
            buffer_id,
            out_port,
            out_group,
            flags,
            match_,
            instructions,
        })
    }
}

/// Which flows a flow stats request asks for. The default asks for every
/// flow of every table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowStatsRequest {
    /// [`OFPTT_ALL`] for all tables.
    pub table_id: u8,
    pub out_port: u32,
    pub out_group: u32,
    pub cookie: u64,
    pub cookie_mask: u64,
    /// Flows this match covers (non-strict, like a delete).
    pub match_: Match,
}

impl Default for FlowStatsRequest {
    fn default() -> Self {
        FlowStatsRequest {
            table_id: OFPTT_ALL,
            out_port: OFPP_ANY,
            out_group: OFPG_ANY,
            cookie: 0,
            cookie_mask: 0,
            match_: Match::new(),
        }
    }
}

impl FlowStatsRequest {
    /// Only the flows whose cookie is exactly `cookie`.
    pub fn by_cookie(cookie: u64) -> FlowStatsRequest {
        FlowStatsRequest {
            cookie,
            cookie_mask: u64::MAX,
            ..FlowStatsRequest::default()
        }
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.put_u8(self.table_id);
        out.put_bytes(0, 3);
        out.put_u32(self.out_port);
        out.put_u32(self.out_group);
        out.put_bytes(0, 4);
        out.put_u64(self.cookie);
        out.put_u64(self.cookie_mask);
        self.match_.encode(out)
    }

    pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<FlowStatsRequest, DecodeError> {
        let table_id = r.u8()?;
        r.skip(3)?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        r.skip(4)?;
        let cookie = r.u64()?;
        let cookie_mask = r.u64()?;
        let match_ = Match::decode(r)?;
        Ok(FlowStatsRequest {
            table_id,
            out_port,
            out_group,
            cookie,
            cookie_mask,
            match_,
        })
    }
}

/// One flow as the switch reports it (`ofp_flow_stats`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowStats {
    pub table_id: u8,
    pub duration_sec: u32,
    pub duration_nsec: u32,
    pub priority: u16,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    /// `OFPFF_*` bits.
    pub flags: u16,
    pub cookie: u64,
    pub packet_count: u64,
    pub byte_count: u64,
    pub match_: Match,
    /// In execution order (§5.9).
    pub instructions: Vec<Instruction>,
}

/// Size of `ofp_flow_stats` before its match.
const FLOW_STATS_FIXED: usize = 48;

impl FlowStats {
    /// Whether this flow is what `fm` (an add) would install: same table,
    /// priority, cookie, match and instructions. Counters, timeouts and
    /// flags are not compared.
    pub fn same_flow_as(&self, fm: &FlowMod) -> bool {
        self.table_id == fm.table_id
            && self.priority == fm.priority
            && self.cookie == fm.cookie
            && self.match_ == fm.match_
            && self.instructions == fm.instructions
    }

    /// Appends one `ofp_flow_stats` entry.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.put_u16(0);
        out.put_u8(self.table_id);
        out.put_u8(0);
        out.put_u32(self.duration_sec);
        out.put_u32(self.duration_nsec);
        out.put_u16(self.priority);
        out.put_u16(self.idle_timeout);
        out.put_u16(self.hard_timeout);
        out.put_u16(self.flags);
        out.put_bytes(0, 4);
        out.put_u64(self.cookie);
        out.put_u64(self.packet_count);
        out.put_u64(self.byte_count);
        self.match_.encode(out)?;
        encode_instructions(&self.instructions, out)?;
        let len = out.len() - start;
        crate::wire::patch_len(out, start, "flow stats entry", len)
    }

    /// Reads one `ofp_flow_stats` entry.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<FlowStats, DecodeError> {
        let len = usize::from(r.u16()?);
        if len < FLOW_STATS_FIXED + 8 {
            return Err(r.bad_length(len));
        }
        let mut e = r.sub(len - 2, "flow stats entry")?;
        let table_id = e.u8()?;
        e.skip(1)?;
        let duration_sec = e.u32()?;
        let duration_nsec = e.u32()?;
        let priority = e.u16()?;
        let idle_timeout = e.u16()?;
        let hard_timeout = e.u16()?;
        let flags = e.u16()?;
        e.skip(4)?;
        let cookie = e.u64()?;
        let packet_count = e.u64()?;
        let byte_count = e.u64()?;
        let match_ = Match::decode(&mut e)?;
        let instructions = decode_instructions(&mut e)?;
        Ok(FlowStats {
            table_id,
            duration_sec,
            duration_nsec,
            priority,
            idle_timeout,
            hard_timeout,
            flags,
            cookie,
            packet_count,
            byte_count,
            match_,
            instructions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_fill_in_the_wildcards() {
        let fm = FlowMod::delete_by_cookie(0xabc);
        assert_eq!(fm.command, FlowModCommand::Delete);
        assert_eq!(fm.table_id, OFPTT_ALL);
        assert_eq!((fm.cookie, fm.cookie_mask), (0xabc, u64::MAX));
        assert_eq!((fm.out_port, fm.out_group), (OFPP_ANY, OFPG_ANY));
        assert!(fm.match_.is_empty());

        let drop = FlowMod::add(0, 2, Match::new().in_port(1), vec![]);
        assert!(drop.instructions.is_empty(), "no actions means drop");
        assert_eq!(drop.buffer_id, OFP_NO_BUFFER);
    }

    #[test]
    fn flow_stats_entry_round_trips_and_checks_length() {
        let fs = FlowStats {
            table_id: 3,
            duration_sec: 10,
            duration_nsec: 500,
            priority: 7,
            idle_timeout: 1,
            hard_timeout: 2,
            flags: 1,
            cookie: 0xfeed,
            packet_count: 99,
            byte_count: 9900,
            match_: Match::new().in_port(4),
            instructions: vec![Instruction::GotoTable(4)],
        };
        let mut out = Vec::new();
        fs.encode(&mut out).expect("encode");
        assert_eq!(out.len(), 48 + 16 + 8);
        let back = FlowStats::decode(&mut Reader::new(&out, "t")).expect("decode");
        assert_eq!(back, fs);
        out[1] = 200; // length beyond the buffer
        assert!(FlowStats::decode(&mut Reader::new(&out, "t")).is_err());
    }
}
