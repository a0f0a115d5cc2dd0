//! Rules for operator-chosen recovery keys, after IncusOS (at least 15 characters, a special
//! character, at least five different characters, nothing too systematic) plus what a boot-time
//! passphrase prompt needs: printable ASCII only, no surrounding spaces. Keys in systemd's own
//! recovery-key format (what GenerateRecoveryKey returns) are accepted as they are.

pub const MIN_LEN: usize = 15;
pub const MAX_LEN: usize = 256;
/// The most recovery keys one call may set.
pub const MAX_KEYS: usize = 8;

/// systemd's recovery key: 8 groups of 8 "modhex" characters joined by dashes (256 bits).
pub fn is_systemd_recovery_key(k: &str) -> bool {
    const MODHEX: &str = "cbdefghijklnrtuv";
    let groups: Vec<&str> = k.split('-').collect();
    groups.len() == 8 && groups.iter().all(|g| g.len() == 8 && g.chars().all(|c| MODHEX.contains(c)))
}

/// The longest run of characters each one step (up or down) from the previous, or equal to it.
fn longest_run(k: &[u8]) -> usize {
    let (mut best, mut up, mut down, mut same) = (1, 1, 1, 1);
    for w in k.windows(2) {
        let d = w[1] as i16 - w[0] as i16;
        up = if d == 1 { up + 1 } else { 1 };
        down = if d == -1 { down + 1 } else { 1 };
        same = if d == 0 { same + 1 } else { 1 };
        best = best.max(up).max(down).max(same);
    }
    best
}

/// Why `key` is refused, in words that never repeat it; `Ok` when it may be enrolled.
pub fn check(key: &str) -> Result<(), String> {
    if is_systemd_recovery_key(key) {
        return Ok(());
    }
    let n = key.chars().count();
    if n < MIN_LEN {
        return Err(format!("A recovery key needs at least {MIN_LEN} characters."));
    }
    if n > MAX_LEN {
        return Err(format!("A recovery key has at most {MAX_LEN} characters."));
    }
    if !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("A recovery key may hold printable ASCII characters only, so that it can be typed at the boot prompt on any keyboard layout.".into());
    }
    if key.starts_with(' ') || key.ends_with(' ') {
        return Err("A recovery key may not begin or end with a space.".into());
    }
    if !key.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Err("A recovery key needs at least one letter.".into());
    }
    if key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("A recovery key needs at least one special character (neither a letter nor a digit).".into());
    }
    let mut distinct: Vec<u8> = key.bytes().collect();
    distinct.sort();
    distinct.dedup();
    if distinct.len() < 5 {
        return Err("A recovery key needs at least five different characters.".into());
    }
    if longest_run(key.as_bytes()) >= 5 {
        return Err("A recovery key may not contain five or more repeated or consecutive characters (such as 'aaaaa' or '12345').".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strong_keys_pass_and_weak_ones_say_why() {
        for ok in ["Correct-Horse-Battery", "tr0ub4dor&3-xyzzy", "a b c d e f g h !", "dfnbjunh-bvllecjh-ltcvbver-flllgulj-lneedlle-gngtehnb-inuidjnn-kljenvgd"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("Short-key-1", "15"),
            ("NoSpecialCharacters123", "special"),
            ("1234-5678-9012-3456", "letter"),
            ("ab-ab-ab-ab-ab-ab-ab", "five different"),
            ("abcdef-Zqx!-Wvut-P", "consecutive"),
            ("aaaaa-Zqx!-Wvut-Pm", "repeated"),
            (" Leading-space-key", "space"),
            ("Schlüssel-für-alles", "ASCII"),
            ("tab\there-and-there", "ASCII"),
        ] {
            let e = check(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains(bad), "the reason repeats the key");
        }
        assert!(check(&"Ab-".repeat(100)).unwrap_err().contains("at most"));
    }

    #[test]
    fn systemd_recovery_key_format() {
        assert!(is_systemd_recovery_key("dfnbjunh-bvllecjh-ltcvbver-flllgulj-lneedlle-gngtehnb-inuidjnn-kljenvgd"));
        // A run like "defgh" may occur in a random systemd key: still accepted.
        assert!(check("defghijk-bvllecjh-ltcvbver-flllgulj-lneedlle-gngtehnb-inuidjnn-kljenvgd").is_ok());
        assert!(!is_systemd_recovery_key("dfnbjunh-bvllecjh-ltcvbver-flllgulj-lneedlle-gngtehnb-inuidjnn"));
        assert!(!is_systemd_recovery_key("aaaaaaaa-bvllecjh-ltcvbver-flllgulj-lneedlle-gngtehnb-inuidjnn-kljenvgd"));
    }
}
