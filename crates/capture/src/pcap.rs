//! Writing captures in the classic pcap format (nanosecond timestamps,
//! link type Ethernet), which Wireshark, tcpdump and tshark all read.

use std::io::{self, Write};
use std::time::UNIX_EPOCH;

use crate::socket::Packet;

/// pcap's magic for nanosecond-resolution files.
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;
pub const SNAPLEN: u32 = 65_535;

/// Writes a pcap file: the header at once, then one record per packet.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&MAGIC_NANOS.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes()); // GMT offset
        header.extend_from_slice(&0u32.to_le_bytes()); // accuracy
        header.extend_from_slice(&SNAPLEN.to_le_bytes());
        header.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&header)?;
        Ok(PcapWriter { out })
    }

    pub fn write(&mut self, packet: &Packet) -> io::Result<()> {
        let since = packet.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let data = &packet.data[..packet.data.len().min(SNAPLEN as usize)];
        let mut record = Vec::with_capacity(16 + data.len());
        record.extend_from_slice(&(since.as_secs() as u32).to_le_bytes());
        record.extend_from_slice(&since.subsec_nanos().to_le_bytes());
        record.extend_from_slice(&(data.len() as u32).to_le_bytes());
        record.extend_from_slice(&(packet.wire_len.max(data.len()) as u32).to_le_bytes());
        record.extend_from_slice(data);
        self.out.write_all(&record)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::Direction;
    use std::time::Duration;

    #[test]
    fn header_then_one_record_per_packet() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let packet = Packet {
            data: vec![1, 2, 3, 4],
            wire_len: 4,
            direction: Direction::In,
            time: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
        };
        w.write(&packet).unwrap();
        let bytes = w.into_inner();
        assert_eq!(bytes.len(), 24 + 16 + 4);
        assert_eq!(&bytes[..4], &MAGIC_NANOS.to_le_bytes());
        assert_eq!(&bytes[20..24], &1u32.to_le_bytes());
        assert_eq!(&bytes[24..28], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&bytes[28..32], &5u32.to_le_bytes());
        assert_eq!(&bytes[32..36], &4u32.to_le_bytes());
        assert_eq!(&bytes[40..], &[1, 2, 3, 4]);
    }
}
