//! The built image's artifacts, named by `keel-image.env` (written by scripts/image.sh).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ImageEnv {
    pub version: String,
    pub image: PathBuf,
    pub uki: PathBuf,
    pub ovmf_code: PathBuf,
    pub ovmf_vars: PathBuf,
    pub bundle: Option<PathBuf>,
    pub keys: PathBuf,
    pub profile: String,
    /// The trixie tools tree the image was built with (QEMU, swtpm, qemu-img, OVMF).
    pub tools: Option<PathBuf>,
}

/// The repository root (qemu-tests/..).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

impl ImageEnv {
    /// `$KEEL_IMAGE_ENV`, else build/image/keel-image.env in the repository.
    pub fn default_path() -> PathBuf {
        std::env::var_os("KEEL_IMAGE_ENV").map(PathBuf::from).unwrap_or_else(|| repo_root().join("build/image/keel-image.env"))
    }

    pub fn load(path: &Path) -> Result<ImageEnv, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e} (build the image first: scripts/image.sh)", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ImageEnv, String> {
        let get = |k: &str| -> Option<String> {
            text.lines().filter(|l| !l.trim_start().starts_with('#')).filter_map(|l| l.split_once('=')).find(|(key, _)| key.trim() == k).map(|(_, v)| v.trim().to_string())
        };
        let need = |k: &str| get(k).filter(|v| !v.is_empty()).ok_or_else(|| format!("{k} is missing"));
        let file = |k: &str| -> Result<PathBuf, String> {
            let p = PathBuf::from(need(k)?);
            if p.exists() { Ok(p) } else { Err(format!("{k}={} does not exist", p.display())) }
        };
        Ok(ImageEnv {
            version: need("KEEL_VERSION")?,
            image: file("KEEL_IMAGE")?,
            uki: file("KEEL_UKI")?,
            ovmf_code: file("KEEL_OVMF_CODE")?,
            ovmf_vars: file("KEEL_OVMF_VARS")?,
            bundle: get("KEEL_BUNDLE").filter(|v| !v.is_empty()).map(PathBuf::from),
            keys: PathBuf::from(need("KEEL_KEYS")?),
            profile: get("KEEL_PROFILE").unwrap_or_else(|| "production".into()),
            tools: get("KEEL_TOOLS").filter(|v| !v.is_empty()).map(PathBuf::from),
        })
    }

    #[cfg(test)]
    pub fn for_test() -> ImageEnv {
        ImageEnv {
            version: "0.0.1".into(),
            image: "/img/keel_0.0.1.raw".into(),
            uki: "/img/keel_0.0.1.efi".into(),
            ovmf_code: "/img/OVMF_CODE.secboot.fd".into(),
            ovmf_vars: "/img/OVMF_VARS.keel.fd".into(),
            bundle: None,
            keys: "/keys".into(),
            profile: "production".into(),
            tools: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_requires_existing_artifacts() {
        let d = std::env::temp_dir().join(format!("keel-image-env-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for f in ["a.raw", "a.efi", "code.fd", "vars.fd"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let text = format!(
            "# comment\nKEEL_VERSION=1.2\nKEEL_IMAGE={0}/a.raw\nKEEL_UKI={0}/a.efi\nKEEL_OVMF_CODE={0}/code.fd\nKEEL_OVMF_VARS={0}/vars.fd\nKEEL_BUNDLE=\nKEEL_KEYS=/k\n",
            d.display()
        );
        let e = ImageEnv::parse(&text).unwrap();
        assert_eq!(e.version, "1.2");
        assert_eq!(e.bundle, None);
        assert_eq!(e.profile, "production");
        std::fs::remove_file(d.join("vars.fd")).unwrap();
        assert!(ImageEnv::parse(&text).unwrap_err().contains("KEEL_OVMF_VARS"));
        assert!(ImageEnv::parse("KEEL_IMAGE=/x\n").unwrap_err().contains("KEEL_VERSION is missing"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
