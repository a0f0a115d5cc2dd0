//! SMBIOS (DSP0134) structure table parsing: `/sys/firmware/dmi/tables/DMI`.

/// One structure: its type, formatted area (header included) and strings.
#[derive(Debug, Clone)]
pub struct Structure {
    pub kind: u8,
    pub handle: u16,
    pub data: Vec<u8>,
    pub strings: Vec<String>,
}

impl Structure {
    pub fn byte(&self, off: usize) -> Option<u8> {
        self.data.get(off).copied()
    }
    pub fn word(&self, off: usize) -> Option<u16> {
        Some(u16::from_le_bytes([*self.data.get(off)?, *self.data.get(off + 1)?]))
    }
    pub fn dword(&self, off: usize) -> Option<u32> {
        Some(u32::from_le_bytes(self.data.get(off..off + 4)?.try_into().ok()?))
    }
    /// The string a byte at `off` refers to (1-based; 0 means none). Placeholder texts that
    /// vendors leave in (`To Be Filled By O.E.M.`, `Not Specified`…) count as none.
    pub fn string(&self, off: usize) -> Option<String> {
        let i = self.byte(off)? as usize;
        super::meaningful(self.strings.get(i.checked_sub(1)?)?)
    }
}

/// Parse a whole structure table; a truncated or malformed tail ends the list (never panics).
pub fn parse(table: &[u8]) -> Vec<Structure> {
    let mut out = vec![];
    let mut i = 0;
    while i + 4 <= table.len() {
        let kind = table[i];
        let len = table[i + 1] as usize;
        if len < 4 || i + len > table.len() {
            break;
        }
        let handle = u16::from_le_bytes([table[i + 2], table[i + 3]]);
        let data = table[i..i + len].to_vec();
        // Strings: NUL-terminated, the set ends with an extra NUL (two NULs when there are none).
        let mut j = i + len;
        let mut strings = vec![];
        let mut start = j;
        loop {
            if j >= table.len() {
                return out;
            }
            if table[j] == 0 {
                if j == start {
                    j += 1;
                    if strings.is_empty() && j < table.len() && table[j] == 0 {
                        j += 1;
                    }
                    break;
                }
                strings.push(String::from_utf8_lossy(&table[start..j]).into_owned());
                start = j + 1;
            }
            j += 1;
        }
        out.push(Structure { kind, handle, data, strings });
        if kind == 127 {
            break;
        }
        i = j;
    }
    out
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Build one structure (for tests and synthetic fixtures).
    pub fn structure(kind: u8, handle: u16, body: &[u8], strings: &[&str]) -> Vec<u8> {
        let mut v = vec![kind, (body.len() + 4) as u8];
        v.extend_from_slice(&handle.to_le_bytes());
        v.extend_from_slice(body);
        if strings.is_empty() {
            v.extend_from_slice(&[0, 0]);
        } else {
            for s in strings {
                v.extend_from_slice(s.as_bytes());
                v.push(0);
            }
            v.push(0);
        }
        v
    }

    #[test]
    fn parses_structures_and_strings() {
        let mut t = structure(1, 0x0100, &[1, 2, 0, 0], &["Vendor", "Model"]);
        t.extend(structure(4, 0x0400, &[1, 3, 0xb3, 0], &[]));
        t.extend(structure(127, 0xffff, &[], &[]));
        let s = parse(&t);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].string(4).as_deref(), Some("Vendor"));
        assert_eq!(s[0].string(5).as_deref(), Some("Model"));
        assert_eq!(s[0].string(6), None);
        assert_eq!(s[1].kind, 4);
        assert_eq!(s[1].byte(6), Some(0xb3));
        assert_eq!(s[2].kind, 127);
    }

    #[test]
    fn truncated_tables_do_not_panic() {
        let t = structure(17, 1, &[0; 30], &["DIMM A1"]);
        for cut in 0..t.len() {
            let _ = parse(&t[..cut]);
        }
        assert_eq!(parse(&t).len(), 1);
    }

    #[test]
    fn placeholder_strings_are_absent() {
        let t = structure(1, 0, &[1], &["To Be Filled By O.E.M."]);
        assert_eq!(parse(&t)[0].string(4), None);
    }
}
