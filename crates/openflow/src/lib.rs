//! ovslab's own OpenFlow 1.3 encoder, decoder and client.
//!
//! ovslab programs Open vSwitch bridges the way Neutron's OVS agent does:
//! it sends FLOW_MODs over the bridge's management socket and reads the
//! flows back to diff them against the desired ones. This crate covers the
//! part of OpenFlow 1.3 (spec version 1.3.5) that needs:
//!
//! - [`oxm`]: match fields and [`Match`], in canonical order so encoding is
//!   deterministic and comparison ignores field order.
//! - [`action`], [`instruction`]: what a flow does; OVS's own Nicira
//!   extensions are kept as raw bytes, never an error.
//! - [`nicira`]: typed views of the Nicira actions br-tun needs (`learn`,
//!   `move`, `load`), built and read over those raw bytes.
//! - [`flow`]: [`FlowMod`], [`FlowStatsRequest`], [`FlowStats`].
//! - [`message`]: whole messages and their header; [`framing`] cuts a byte
//!   stream into them.
//! - [`display`]: ovs-ofctl-like text for logs.
//! - [`client`]: the async [`Client`] (hello, features, apply with one
//!   barrier, multipart flow dumps).
//! - [`monitor`]: [`FlowMonitor`], told when a bridge's flows change.

pub mod action;
pub mod client;
mod connection;
pub mod consts;
pub mod display;
pub mod error;
pub mod error_msg;
pub mod flow;
pub mod framing;
pub mod instruction;
pub mod message;
pub mod monitor;
pub mod nicira;
pub mod oxm;
pub mod wire;

#[cfg(test)]
mod proptests;

pub use action::Action;
pub use client::{Client, DEFAULT_TIMEOUT, MAX_DUMP_BYTES};
pub use consts::*;
pub use error::OpenflowError;
pub use error_msg::ErrorMsg;
pub use flow::{FlowMod, FlowModCommand, FlowStats, FlowStatsRequest};
pub use framing::FrameDecoder;
pub use instruction::{Instruction, sort_instructions};
pub use message::{
    FeaturesReply, Hello, HelloElement, Message, MultipartReply, MultipartReplyBody,
    MultipartRequest, MultipartRequestBody,
};
pub use monitor::FlowMonitor;
pub use nicira::{Learn, LearnDst, LearnSpec, LearnSrc, NxmField, RegLoad, RegMove, Subfield};
pub use oxm::{MacAddr, Match, OxmField, RawOxm};
pub use wire::{DecodeError, EncodeError};
