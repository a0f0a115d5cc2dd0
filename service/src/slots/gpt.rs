//! A GUID Partition Table reader and writer for a disk image file or a block device.
//!
//! Only what the slot engine needs: read the primary table (falling back to the backup when the
//! primary is damaged), find partitions by type GUID and name, change partition names in BOTH
//! tables with correct CRCs (fsynced), repair one table from the other, and create a new table on
//! an image file (the simulated platform's disk). Layout per UEFI 2.10 §5.3.

use std::fmt;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
const HEADER_SIZE: u32 = 92;
const ENTRY_SIZE: u32 = 128;
const NUM_ENTRIES: u32 = 128;
/// Partitions start on 1 MiB boundaries, as sfdisk and systemd-repart do.
const ALIGN: u64 = 1 << 20;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A GUID as stored on disk (the first three fields little-endian, "mixed endian").
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    /// Parse the usual text form, e.g. `c12a7328-f81f-11d2-ba4b-00a0c93ec93b`.
    pub fn parse(s: &str) -> Option<Guid> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || s.len() != 36 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let mut be = [0u8; 16];
        for (i, b) in be.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        let mut d = be;
        d[0..4].reverse();
        d[4..6].reverse();
        d[6..8].reverse();
        Some(Guid(d))
    }

    pub fn random() -> Guid {
        Guid::parse(&uuid::Uuid::new_v4().to_string()).expect("uuid text form")
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// systemd's Discoverable Partitions Specification type GUIDs used by Keel (x86-64).
pub mod types {
    pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    pub const USR_X86_64: &str = "8484680c-9521-48c6-9c11-b0720656f69e";
    pub const USR_VERITY_X86_64: &str = "77ff5f63-e7b6-4633-acf4-1565b864c0e6";
    pub const USR_VERITY_SIG_X86_64: &str = "e7bb33fb-06cf-4e81-8273-e543b413e2e2";
    pub const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    pub const SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
    pub const HOME: &str = "933ac7e1-2eb4-4f13-b844-0e14e2aef915";
    pub const SRV: &str = "3b8f8425-20e0-4f3b-907f-1a25a76f98e8";
    pub const VAR: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
    pub const LINUX_GENERIC: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

    /// The type GUID of a systemd-repart `Type=` name (x86-64 for the per-architecture ones).
    pub fn of_repart_name(name: &str) -> Option<&'static str> {
        Some(match name {
            "esp" => ESP,
            "root" | "root-x86-64" => ROOT_X86_64,
            "usr" | "usr-x86-64" => USR_X86_64,
            "usr-verity" | "usr-x86-64-verity" => USR_VERITY_X86_64,
            "usr-verity-sig" | "usr-x86-64-verity-sig" => USR_VERITY_SIG_X86_64,
            "swap" => SWAP,
            "home" => HOME,
            "srv" => SRV,
            "var" => VAR,
            "linux-generic" => LINUX_GENERIC,
            _ => return None,
        })
    }
}

/// One used entry of the partition array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Index in the entry array (0-based); the partition number is `index + 1`.
    pub index: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

impl Partition {
    pub fn number(&self) -> u32 {
        self.index + 1
    }
    pub fn offset(&self, lba: u64) -> u64 {
        self.first_lba * lba
    }
    pub fn size(&self, lba: u64) -> u64 {
        (self.last_lba + 1 - self.first_lba) * lba
    }
    pub fn is_type(&self, guid: &str) -> bool {
        Guid::parse(guid) == Some(self.type_guid)
    }
}

/// Which of the two tables were found intact when the disk was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub primary_ok: bool,
    pub backup_ok: bool,
    /// Both intact but their partition arrays differ (a write was interrupted between the two).
    pub differ: bool,
}

impl Health {
    pub fn clean(&self) -> bool {
        self.primary_ok && self.backup_ok && !self.differ
    }
}

/// A partition table as read from (or to be written to) one disk.
#[derive(Clone, Debug)]
pub struct Gpt {
    /// Logical block size in bytes.
    pub lba: u64,
    /// Size of the disk in logical blocks.
    pub total_lbas: u64,
    pub disk_guid: Guid,
    pub first_usable: u64,
    pub last_usable: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    /// Where the backup header lives (the primary's AlternateLBA).
    pub backup_lba: u64,
    /// The raw partition entry array (num_entries * entry_size bytes).
    entries: Vec<u8>,
    pub partitions: Vec<Partition>,
}

struct Header {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Logical block size: BLKSSZGET for a block device, 512 for a file.
pub fn logical_block_size(f: &File) -> u64 {
    use std::os::unix::fs::FileTypeExt;
    if f.metadata().map(|m| m.file_type().is_block_device()).unwrap_or(false) {
        const BLKSSZGET: libc::c_ulong = 0x1268;
        let mut sz: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes one int through the pointer.
        if unsafe { libc::ioctl(f.as_raw_fd(), BLKSSZGET as _, &mut sz) } == 0 && sz >= 512 {
            return sz as u64;
        }
    }
    512
}

fn device_size(f: &File) -> io::Result<u64> {
    // Works for files and for block devices alike.
    let mut f = f;
    f.seek(SeekFrom::End(0))
}

fn parse_header(b: &[u8], lba: u64) -> Option<Header> {
    if b.len() < HEADER_SIZE as usize || &b[0..8] != SIGNATURE {
        return None;
    }
    let size = u32_at(b, 12) as usize;
    if !(HEADER_SIZE as usize..=lba as usize).contains(&size) {
        return None;
    }
    let crc = u32_at(b, 16);
    let mut copy = b[..size].to_vec();
    copy[16..20].fill(0);
    if crc32fast::hash(&copy) != crc {
        return None;
    }
    let h = Header {
        my_lba: u64_at(b, 24),
        alternate_lba: u64_at(b, 32),
        first_usable: u64_at(b, 40),
        last_usable: u64_at(b, 48),
        disk_guid: Guid(b[56..72].try_into().unwrap()),
        entries_lba: u64_at(b, 72),
        num_entries: u32_at(b, 80),
        entry_size: u32_at(b, 84),
        entries_crc: u32_at(b, 88),
    };
    if h.entry_size < 128 || h.entry_size % 8 != 0 || h.num_entries == 0 || h.num_entries > 4096 {
        return None;
    }
    Some(h)
}

/// Read a header at `at` and its entry array; `None` if either is damaged.
fn read_table(f: &File, lba: u64, at: u64) -> io::Result<Option<(Header, Vec<u8>)>> {
    let mut hb = vec![0u8; lba as usize];
    if f.read_exact_at(&mut hb, at * lba).is_err() {
        return Ok(None);
    }
    let Some(h) = parse_header(&hb, lba) else { return Ok(None) };
    if h.my_lba != at {
        return Ok(None);
    }
    let mut entries = vec![0u8; h.num_entries as usize * h.entry_size as usize];
    if f.read_exact_at(&mut entries, h.entries_lba * lba).is_err() {
        return Ok(None);
    }
    if crc32fast::hash(&entries) != h.entries_crc {
        return Ok(None);
    }
    Ok(Some((h, entries)))
}

fn parse_entries(raw: &[u8], entry_size: u32) -> Vec<Partition> {
    raw.chunks(entry_size as usize)
        .enumerate()
        .filter_map(|(i, e)| {
            let type_guid = Guid(e[0..16].try_into().unwrap());
            if type_guid == Guid::ZERO {
                return None;
            }
            let units: Vec<u16> = e[56..128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|u| *u != 0).collect();
            Some(Partition {
                index: i as u32,
                type_guid,
                unique_guid: Guid(e[16..32].try_into().unwrap()),
                first_lba: u64_at(e, 32),
                last_lba: u64_at(e, 40),
                attributes: u64_at(e, 48),
                name: String::from_utf16_lossy(&units),
            })
        })
        .collect()
}

/// Encode a partition name: at most 36 UTF-16 code units.
fn encode_name(name: &str) -> io::Result<[u8; 72]> {
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > 36 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("partition name {name:?} is longer than 36 characters")));
    }
    let mut out = [0u8; 72];
    for (i, u) in units.iter().enumerate() {
        out[2 * i..2 * i + 2].copy_from_slice(&u.to_le_bytes());
    }
    Ok(out)
}

impl Gpt {
    /// Read the table of `f`: the primary if intact, else the backup (at the primary's
    /// AlternateLBA, or the last block of the disk). Errors when neither is intact.
    pub fn read(f: &File) -> io::Result<(Gpt, Health)> {
        let lba = logical_block_size(f);
        let total_lbas = device_size(f)? / lba;
        if total_lbas < 68 {
            return Err(bad("disk too small for a GPT"));
        }
        let primary = read_table(f, lba, 1)?;
        let backup_at = primary.as_ref().map(|(h, _)| h.alternate_lba).filter(|a| *a < total_lbas).unwrap_or(total_lbas - 1);
        let mut backup = read_table(f, lba, backup_at)?;
        if backup.is_none() && backup_at != total_lbas - 1 {
            backup = read_table(f, lba, total_lbas - 1)?;
        }
        let health = Health {
            primary_ok: primary.is_some(),
            backup_ok: backup.is_some(),
            differ: match (&primary, &backup) {
                (Some((_, a)), Some((_, b))) => a != b,
                _ => false,
            },
        };
        let (h, entries, backup_lba) = match (primary, backup) {
            (Some((h, e)), _) => {
                let alt = h.alternate_lba;
                (h, e, alt)
            }
            (None, Some((h, e))) => {
                let my = h.my_lba;
                (h, e, my)
            }
            (None, None) => return Err(bad("no intact GPT header (neither primary nor backup)")),
        };
        let partitions = parse_entries(&entries, h.entry_size);
        Ok((
            Gpt {
                lba,
                total_lbas,
                disk_guid: h.disk_guid,
                first_usable: h.first_usable,
                last_usable: h.last_usable,
                num_entries: h.num_entries,
                entry_size: h.entry_size,
                backup_lba,
                entries,
                partitions,
            },
            health,
        ))
    }

    fn entries_bytes(&self) -> usize {
        self.num_entries as usize * self.entry_size as usize
    }

    fn entries_lbas(&self) -> u64 {
        (self.entries_bytes() as u64).div_ceil(self.lba)
    }

    /// The backup entry array sits just before the backup header.
    fn backup_entries_lba(&self) -> u64 {
        self.backup_lba - self.entries_lbas()
    }

    fn header(&self, my: u64, alternate: u64, entries_lba: u64) -> Vec<u8> {
        let mut h = vec![0u8; self.lba as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        h[88..92].copy_from_slice(&crc32fast::hash(&self.entries).to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Write both tables from this in-memory state: the primary (entries, then header), fsync,
    /// then the backup (entries, then header), fsync. Each array is one write; a crash between
    /// the entries and the header leaves that copy's CRC wrong, so a reader takes the other copy.
    pub fn write(&self, f: &File) -> io::Result<()> {
        f.write_all_at(&self.entries, 2 * self.lba)?;
        f.write_all_at(&self.header(1, self.backup_lba, 2), self.lba)?;
        f.sync_data()?;
        let be = self.backup_entries_lba();
        f.write_all_at(&self.entries, be * self.lba)?;
        f.write_all_at(&self.header(self.backup_lba, 1, be), self.backup_lba * self.lba)?;
        f.sync_data()
    }

    /// Rename partitions (by entry index) in memory; `write` puts the change on disk.
    pub fn set_name(&mut self, index: u32, name: &str) -> io::Result<()> {
        let enc = encode_name(name)?;
        let at = index as usize * self.entry_size as usize;
        if index >= self.num_entries || self.entries[at..at + 16] == [0; 16] {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no partition at entry {index}")));
        }
        self.entries[at + 56..at + 128].copy_from_slice(&enc);
        self.partitions = parse_entries(&self.entries, self.entry_size);
        Ok(())
    }

    /// Set a partition's unique GUID (its PARTUUID).
    pub fn set_unique_guid(&mut self, index: u32, guid: Guid) -> io::Result<()> {
        let at = index as usize * self.entry_size as usize;
        if index >= self.num_entries || self.entries[at..at + 16] == [0; 16] {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no partition at entry {index}")));
        }
        self.entries[at + 16..at + 32].copy_from_slice(&guid.0);
        self.partitions = parse_entries(&self.entries, self.entry_size);
        Ok(())
    }

    /// Remove a partition's entry (all 128 bytes zeroed) in memory; `write` puts the change on
    /// disk. The data in its blocks is not touched.
    pub fn remove(&mut self, index: u32) -> io::Result<()> {
        let at = index as usize * self.entry_size as usize;
        if index >= self.num_entries || self.entries[at..at + 16] == [0; 16] {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no partition at entry {index}")));
        }
        self.entries[at..at + self.entry_size as usize].fill(0);
        self.partitions = parse_entries(&self.entries, self.entry_size);
        Ok(())
    }

    /// Rename several partitions in one update of both tables.
    pub fn relabel(&mut self, f: &File, names: &[(u32, &str)]) -> io::Result<()> {
        for (i, n) in names {
            self.set_name(*i, n)?;
        }
        self.write(f)
    }

    pub fn find_type<'a>(&'a self, guid: &'a str) -> impl Iterator<Item = &'a Partition> + 'a {
        self.partitions.iter().filter(move |p| p.is_type(guid))
    }

    pub fn by_index(&self, index: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.index == index)
    }

    pub fn by_label(&self, label: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == label)
    }

    /// Lay out a new table on an image file of `size` bytes (512-byte blocks): a protective MBR,
    /// and `parts` (type GUID, name, size in bytes rounded up to 1 MiB) in order from 1 MiB on.
    pub fn create(f: &File, size: u64, parts: &[(&str, &str, u64)]) -> io::Result<Gpt> {
        let lba = 512u64;
        let total_lbas = size / lba;
        let entries_lbas = (NUM_ENTRIES as u64 * ENTRY_SIZE as u64) / lba;
        let mut gpt = Gpt {
            lba,
            total_lbas,
            disk_guid: Guid::random(),
            first_usable: 2 + entries_lbas,
            last_usable: total_lbas - 2 - entries_lbas,
            num_entries: NUM_ENTRIES,
            entry_size: ENTRY_SIZE,
            backup_lba: total_lbas - 1,
            entries: vec![0u8; (NUM_ENTRIES * ENTRY_SIZE) as usize],
            partitions: Vec::new(),
        };
        let mut next = ALIGN / lba;
        for (i, (ty, name, bytes)) in parts.iter().enumerate() {
            let len = bytes.div_ceil(ALIGN) * ALIGN / lba;
            let last = next + len - 1;
            if last > gpt.last_usable {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "partitions do not fit the disk"));
            }
            let e = &mut gpt.entries[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&Guid::parse(ty).ok_or_else(|| bad(format!("bad type GUID {ty}")))?.0);
            e[16..32].copy_from_slice(&Guid::random().0);
            e[32..40].copy_from_slice(&next.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            e[56..128].copy_from_slice(&encode_name(name)?);
            next = last + 1;
        }
        gpt.partitions = parse_entries(&gpt.entries, ENTRY_SIZE);
        f.set_len(size)?;
        // Protective MBR: one partition of type 0xEE covering the disk.
        let mut mbr = [0u8; 512];
        mbr[446 + 1..446 + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
        mbr[446 + 4] = 0xEE;
        mbr[446 + 5..446 + 8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&((total_lbas - 1).min(u32::MAX as u64) as u32).to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        f.write_all_at(&mbr, 0)?;
        gpt.write(f)?;
        Ok(gpt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_roundtrip_and_mixed_endian() {
        let g = Guid::parse(types::ESP).unwrap();
        assert_eq!(g.0[0..4], [0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(g.to_string(), types::ESP);
        assert!(Guid::parse("c12a7328f81f11d2ba4b00a0c93ec93b").is_none());
        assert!(Guid::parse("x12a7328-f81f-11d2-ba4b-00a0c93ec93b").is_none());
    }

    #[test]
    fn names_longer_than_36_units_are_refused() {
        assert!(encode_name(&"a".repeat(36)).is_ok());
        assert!(encode_name(&"a".repeat(37)).is_err());
    }
}
