//! Boot entries and systemd-boot's rules: UKI file names with boot-counting suffixes
//! (`keel_<version>+LEFT-DONE.efi`), version comparison (`strverscmp_improved`), and which entry
//! the boot loader picks (OneShot, then Default, then the newest entry with tries left).

use std::cmp::Ordering;

/// Every Keel UKI is named `keel_<version>[+LEFT[-DONE]].efi` in `EFI/Linux/` of the ESP.
pub const PREFIX: &str = "keel_";
/// Tries a new entry gets (`keel_<version>+3.efi`).
pub const TRIES: u32 = 3;

/// One UKI in the ESP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The file name in `EFI/Linux/`, e.g. `keel_1.2+2-1.efi`.
    pub file: String,
    /// systemd-boot's entry id: the file name without the counter, e.g. `keel_1.2.efi`.
    pub id: String,
    pub version: String,
    /// `None` for an entry without a counter (blessed, or never counted).
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
}

impl Entry {
    pub fn blessed(&self) -> bool {
        self.tries_left.is_none()
    }
    /// An entry whose tries are used up (`+0-N`): systemd-boot sorts it last.
    pub fn bad(&self) -> bool {
        self.tries_left == Some(0)
    }
}

/// Is `v` acceptable as a Keel version? Characters systemd treats as version characters
/// (alphanumerics and `.~^-`), starting alphanumeric, short enough that the longest partition
/// label (`keel_<v>_verity_sig`) fits GPT's 36 characters. No `+` (the boot counter's separator),
/// `/` or `_`.
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 20
        && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || ".~^-".contains(c))
}

pub fn entry_id(version: &str) -> String {
    format!("{PREFIX}{version}.efi")
}

pub fn entry_file(version: &str, left: Option<u32>, done: Option<u32>) -> String {
    match (left, done) {
        (Some(l), Some(d)) if d > 0 => format!("{PREFIX}{version}+{l}-{d}.efi"),
        (Some(l), _) => format!("{PREFIX}{version}+{l}.efi"),
        _ => entry_id(version),
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parse a file name of `EFI/Linux/`; `None` for anything that is not a Keel entry.
pub fn parse_entry(file: &str) -> Option<Entry> {
    let stem = file.strip_suffix(".efi").or_else(|| file.strip_suffix(".EFI"))?;
    let (base, left, done) = match stem.rsplit_once('+') {
        Some((base, counter)) => {
            let (l, d) = match counter.split_once('-') {
                Some((l, d)) => (digits(l)?, Some(digits(d)?)),
                None => (digits(counter)?, None),
            };
            (base, Some(l), Some(d.unwrap_or(0)))
        }
        None => (stem, None, None),
    };
    let version = base.strip_prefix(PREFIX)?;
    if !valid_version(version) {
        return None;
    }
    Some(Entry { file: file.to_string(), id: entry_id(version), version: version.to_string(), tries_left: left, tries_done: done })
}

fn valid_version_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"~-^.".contains(&c)
}

/// systemd's `strverscmp_improved()` (src/fundamental/string-util-fundamental.c): `.`/`-`/`^`
/// separate segments, numeric segments compare as numbers and are newer than alphabetic ones,
/// `~` marks a pre-release (older), and more segments are newer.
pub fn vercmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.is_empty() || b.is_empty() {
        return a.cmp(b);
    }
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let (mut i, mut j) = (0usize, 0usize);
    loop {
        while i < a.len() && !valid_version_char(a[i]) {
            i += 1;
        }
        while j < b.len() && !valid_version_char(b[j]) {
            j += 1;
        }
        for sep in [b'~'] {
            if at(a, i) == sep || at(b, j) == sep {
                let r = (at(a, i) != sep).cmp(&(at(b, j) != sep));
                if r != Ordering::Equal {
                    return r;
                }
                i += 1;
                j += 1;
            }
        }
        if i >= a.len() || j >= b.len() {
            return a[i.min(a.len())..].cmp(&b[j.min(b.len())..]);
        }
        for sep in [b'-', b'^', b'.'] {
            if at(a, i) == sep || at(b, j) == sep {
                let r = (at(a, i) != sep).cmp(&(at(b, j) != sep));
                if r != Ordering::Equal {
                    return r;
                }
                i += 1;
                j += 1;
            }
        }
        if at(a, i).is_ascii_digit() || at(b, j).is_ascii_digit() {
            let (mut ai, mut bj) = (i, j);
            while at(a, ai).is_ascii_digit() {
                ai += 1;
            }
            while at(b, bj).is_ascii_digit() {
                bj += 1;
            }
            let r = (ai != i).cmp(&(bj != j));
            if r != Ordering::Equal {
                return r;
            }
            while at(a, i) == b'0' {
                i += 1;
            }
            while at(b, j) == b'0' {
                j += 1;
            }
            let r = (ai - i).cmp(&(bj - j));
            if r != Ordering::Equal {
                return r;
            }
            let r = a[i..ai].cmp(&b[j..bj]);
            if r != Ordering::Equal {
                return r;
            }
            i = ai;
            j = bj;
        } else {
            let (mut ai, mut bj) = (i, j);
            while at(a, ai).is_ascii_alphabetic() {
                ai += 1;
            }
            while at(b, bj).is_ascii_alphabetic() {
                bj += 1;
            }
            let n = (ai - i).min(bj - j);
            let r = a[i..i + n].cmp(&b[j..j + n]);
            if r != Ordering::Equal {
                return r;
            }
            let r = (ai - i).cmp(&(bj - j));
            if r != Ordering::Equal {
                return r;
            }
            i = ai;
            j = bj;
        }
        if i == a.len() && j == b.len() {
            return Ordering::Equal;
        }
    }
}

/// systemd-boot's menu order (`boot_entry_compare`): entries without tries left last, then
/// newest id first, then more tries left, then fewer tries done.
pub fn menu_order(a: &Entry, b: &Entry) -> Ordering {
    a.bad()
        .cmp(&b.bad())
        .then_with(|| vercmp(&b.id, &a.id))
        .then_with(|| match (a.tries_left, b.tries_left) {
            (Some(x), Some(y)) => y.cmp(&x).then_with(|| a.tries_done.cmp(&b.tries_done)),
            _ => Ordering::Equal,
        })
}

fn matches(pattern: &str, e: &Entry) -> bool {
    pattern.eq_ignore_ascii_case(&e.id) || pattern.eq_ignore_ascii_case(&e.file)
}

/// Why an entry was picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Reason {
    OneShot,
    Default,
    Newest,
}

/// The entry systemd-boot boots now: `LoaderEntryOneShot` if it names an entry, else
/// `LoaderEntryDefault` if it names an entry that still has tries left, else the first entry in
/// menu order (the newest with tries left; an entry without tries left only if nothing else is
/// there).
pub fn select<'a>(entries: &'a [Entry], oneshot: Option<&str>, default: Option<&str>) -> Option<(&'a Entry, Reason)> {
    if let Some(e) = oneshot.and_then(|p| entries.iter().find(|e| matches(p, e))) {
        return Some((e, Reason::OneShot));
    }
    if let Some(e) = default.and_then(|p| entries.iter().find(|e| matches(p, e) && !e.bad())) {
        return Some((e, Reason::Default));
    }
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| menu_order(a, b));
    sorted.first().map(|e| (*e, Reason::Newest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn entry_names_parse_with_and_without_counters() {
        let e = parse_entry("keel_1.2.3+3.efi").unwrap();
        assert_eq!((e.version.as_str(), e.id.as_str(), e.tries_left, e.tries_done), ("1.2.3", "keel_1.2.3.efi", Some(3), Some(0)));
        let e = parse_entry("keel_2.0-rc1+0-3.efi").unwrap();
        assert_eq!((e.version.as_str(), e.tries_left, e.tries_done), ("2.0-rc1", Some(0), Some(3)));
        assert!(e.bad());
        let e = parse_entry("keel_1.0.efi").unwrap();
        assert!(e.blessed());
        for bad in ["other_1.0.efi", "keel_1.0+x.efi", "keel_1.0+1-.efi", "keel_.efi", "keel_1.0.efi.part", "keel_a_b.efi"] {
            assert!(parse_entry(bad).is_none(), "{bad}");
        }
        assert_eq!(entry_file("1.0", Some(2), Some(1)), "keel_1.0+2-1.efi");
        assert_eq!(entry_file("1.0", Some(3), Some(0)), "keel_1.0+3.efi");
        assert_eq!(entry_file("1.0", None, None), "keel_1.0.efi");
    }

    #[test]
    fn versions_compare_like_systemd() {
        // Cases from systemd's test-string-util.c (test_strverscmp_improved).
        let newer = [
            ("123.45-67.89", "123.45-67.88"),
            ("123.45-67.89", "123.45-67.9"),
            ("123.45-67.89a", "123.45-67.89"),
            ("123.45-67.89", "123.45-67.ab"),
            ("123.45-67.89", "123.45-67.89~rc1"),
            ("123.45-67.89", "123.45-67~rc1"),
            ("123.45.1-67", "123.45-67"),
            ("124", "123.45.67.89"),
            ("2", "1.0"),
            ("1.10", "1.9"),
            ("1.0^1", "1.0"),
            ("1.0", "1.0~rc1"),
            ("1.0~rc2", "1.0~rc1"),
            ("1.0.1", "1.0-1"),
        ];
        for (a, b) in newer {
            assert_eq!(vercmp(a, b), Greater, "{a} > {b}");
            assert_eq!(vercmp(b, a), Less, "{b} < {a}");
        }
        assert_eq!(vercmp("1.001", "1.1"), Equal);
        assert_eq!(vercmp("1.0", "1.0"), Equal);
    }

    #[test]
    fn selection_follows_systemd_boot() {
        let es: Vec<Entry> = ["keel_1.0.efi", "keel_2.0+3.efi", "keel_1.5+0-3.efi"].iter().map(|f| parse_entry(f).unwrap()).collect();
        assert_eq!(select(&es, None, None).unwrap().0.version, "2.0");
        assert_eq!(select(&es, None, Some("keel_1.0.efi")).unwrap(), (&es[0], Reason::Default));
        // A default whose tries are used up is not honoured.
        assert_eq!(select(&es, None, Some("keel_1.5.efi")).unwrap().0.version, "2.0");
        assert_eq!(select(&es, Some("keel_1.5.efi"), Some("keel_1.0.efi")).unwrap(), (&es[2], Reason::OneShot));
        let es: Vec<Entry> = ["keel_1.0.efi", "keel_2.0+0-3.efi"].iter().map(|f| parse_entry(f).unwrap()).collect();
        assert_eq!(select(&es, None, None).unwrap().0.version, "1.0");
        let es: Vec<Entry> = ["keel_2.0+0-3.efi"].iter().map(|f| parse_entry(f).unwrap()).collect();
        assert_eq!(select(&es, None, None).unwrap().0.version, "2.0");
        assert!(select(&[], None, None).is_none());
    }
}
