//! Memory devices: SMBIOS type 17 (DSP0134 §7.18).

use super::smbios::Structure;
use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Dimm {
    pub locator: Option<String>,
    pub bank: Option<String>,
    pub size_mib: u64,
    /// Redfish MemoryDeviceType.
    pub device_type: Option<&'static str>,
    pub speed_mts: Option<u32>,
    pub configured_mts: Option<u32>,
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub part_number: Option<String>,
    pub rank: Option<u8>,
    pub data_width: Option<u16>,
    pub total_width: Option<u16>,
}

/// SMBIOS memory type (§7.18.2) as Redfish MemoryDeviceType.
pub fn device_type(code: u8) -> Option<&'static str> {
    Some(match code {
        0x08 => "ROM",
        0x0F => "SDRAM",
        0x12 => "DDR",
        0x13 => "DDR2",
        0x14 => "DDR2_SDRAM_FB_DIMM",
        0x18 => "DDR3",
        0x1A => "DDR4",
        0x1D => "LPDDR3_SDRAM",
        0x1E => "LPDDR4_SDRAM",
        0x1F => "Logical",
        0x20 => "HBM",
        0x21 => "HBM2",
        0x22 => "DDR5",
        0x23 => "LPDDR5_SDRAM",
        0x24 => "HBM3",
        _ => return None,
    })
}

fn size_mib(t: &Structure) -> Option<u64> {
    let size = t.word(0x0C)?;
    match size {
        0 | 0xFFFF => None,
        0x7FFF => t.dword(0x1C).map(|e| (e & 0x7FFF_FFFF) as u64),
        s if s & 0x8000 != 0 => Some(((s & 0x7FFF) as u64) / 1024),
        s => Some(s as u64),
    }
}

/// The installed DIMMs (empty slots are left out).
pub fn dimms(tables: &[Structure]) -> Vec<Dimm> {
    tables
        .iter()
        .filter(|t| t.kind == 17)
        .filter_map(|t| {
            let size_mib = size_mib(t)?;
            let width = |off| t.word(off).filter(|w| *w != 0 && *w != 0xFFFF);
            Some(Dimm {
                locator: t.string(0x10),
                bank: t.string(0x11),
                size_mib,
                device_type: t.byte(0x12).and_then(device_type),
                speed_mts: t.word(0x15).filter(|s| *s != 0 && *s != 0xFFFF).map(u32::from),
                configured_mts: t.word(0x20).filter(|s| *s != 0 && *s != 0xFFFF).map(u32::from),
                manufacturer: t.string(0x17),
                serial: t.string(0x18),
                part_number: t.string(0x1A),
                rank: t.byte(0x1B).map(|a| a & 0x0F).filter(|r| *r != 0),
                data_width: width(0x0A),
                total_width: width(0x08),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::smbios::{parse, tests::structure};

    pub fn dimm(handle: u16, size: u16, ext: u32, kind: u8, strings: &[&str]) -> Vec<u8> {
        // Formatted area of a type 17 structure from offset 4 to 0x28 (SMBIOS 3.x).
        let mut b = vec![0u8; 0x28 - 4];
        let put16 = |b: &mut Vec<u8>, off: usize, v: u16| b[off - 4..off - 2].copy_from_slice(&v.to_le_bytes());
        put16(&mut b, 0x08, 72);
        put16(&mut b, 0x0A, 64);
        put16(&mut b, 0x0C, size);
        b[0x10 - 4] = 1; // device locator
        b[0x11 - 4] = 2; // bank locator
        b[0x12 - 4] = kind;
        put16(&mut b, 0x15, 3200);
        b[0x17 - 4] = 3;
        b[0x18 - 4] = 4;
        b[0x1A - 4] = 5;
        b[0x1B - 4] = 2;
        b[0x1C - 4..0x20 - 4].copy_from_slice(&ext.to_le_bytes());
        put16(&mut b, 0x20, 2933);
        structure(17, handle, &b, strings)
    }

    #[test]
    fn reads_sizes_types_and_strings() {
        let mut t = dimm(1, 16384, 0, 0x1A, &["DIMM_A1", "P0_Node0_Channel0", "Samsung", "S123", "M393A4K40DB3-CWE"]);
        t.extend(dimm(2, 0x7FFF, 131072, 0x22, &["DIMM_B1", "BANK 1", "Micron", "S456", "MTC40F2046S1RC48BA1"]));
        t.extend(dimm(3, 0, 0, 0x1A, &["DIMM_C1", "BANK 2", "NO DIMM", "NO DIMM", "NO DIMM"]));
        let d = dimms(&parse(&t));
        assert_eq!(d.len(), 2, "the empty slot is not a DIMM");
        assert_eq!(d[0].size_mib, 16384);
        assert_eq!(d[0].device_type, Some("DDR4"));
        assert_eq!(d[0].locator.as_deref(), Some("DIMM_A1"));
        assert_eq!(d[0].part_number.as_deref(), Some("M393A4K40DB3-CWE"));
        assert_eq!((d[0].speed_mts, d[0].configured_mts, d[0].rank), (Some(3200), Some(2933), Some(2)));
        assert_eq!(d[1].size_mib, 131072);
        assert_eq!(d[1].device_type, Some("DDR5"));
    }
}
