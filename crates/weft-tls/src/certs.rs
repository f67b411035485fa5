//! `weft certs`: a development CA and the certificates of placement nodes, sidecars and
//! operators, made with rcgen. Each identity's directory has the layout of a Kubernetes TLS
//! Secret (`tls.crt`, `tls.key`, `ca.crt`), so the same flags work with cert-manager's Secrets.

use crate::error::TlsError;
use crate::identity::{ADMIN, PLACEMENT, SpiffeId};
use crate::{DEFAULT_NAMESPACE, DEFAULT_TRUST_DOMAIN};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// Clocks of the machines differ a little: certificates are valid from a few minutes ago.
const BACKDATE: Duration = Duration::minutes(5);

/// A self-signed CA for `trust_domain`.
pub fn make_ca(trust_domain: &str, days: u32) -> Result<Pem, TlsError> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("Weft CA ({trust_domain})"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, days);
    let cert = p.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(i64::from(days.max(1)));
}

/// A leaf certificate for `id`, signed by `ca`, usable as server and as client (every Weft
/// process is both), with extra DNS names if given.
pub fn issue(ca: &Pem, id: &SpiffeId, dns_names: &[String], days: u32) -> Result<Pem, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key)
        .map_err(|e| TlsError::Issue(format!("the CA key is not usable: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)
        .map_err(|e| TlsError::Issue(format!("the CA certificate is not usable: {e}")))?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, id.name.clone());
    p.distinguished_name = dn;
    let uri = id
        .to_string()
        .try_into()
        .map_err(|e| TlsError::Issue(format!("{id}: {e}")))?;
    p.subject_alt_names = vec![SanType::URI(uri)];
    for d in dns_names {
        let name = d
            .clone()
            .try_into()
            .map_err(|e| TlsError::Issue(format!("DNS name `{d}`: {e}")))?;
        p.subject_alt_names.push(SanType::DnsName(name));
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, days);
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    };
    // Write next to the target, then rename: a process re-reading the files on change never
    // sees half a file.
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let _ = secret;
        let mut f = o.open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a CA written by [`write_ca`] (`ca.crt`, `ca.key` in `dir`).
pub fn read_ca(dir: &Path) -> Result<Pem, TlsError> {
    Ok(Pem {
        cert: read_text(&dir.join("ca.crt"))?,
        key: read_text(&dir.join("ca.key"))?,
    })
}

pub fn write_ca(dir: &Path, ca: &Pem) -> Result<(), TlsError> {
    mkdir(dir)?;
    write(&dir.join("ca.crt"), &ca.cert, false)?;
    write(&dir.join("ca.key"), &ca.key, true)
}

/// Writes `tls.crt`, `tls.key` and `ca.crt` into `dir` (the key last: a watcher that sees the
/// key change finds the matching certificate already there).
pub fn write_leaf(dir: &Path, leaf: &Pem, ca_cert: &str) -> Result<(), TlsError> {
    mkdir(dir)?;
    write(&dir.join("ca.crt"), ca_cert, false)?;
    write(&dir.join("tls.crt"), &leaf.cert, false)?;
    write(&dir.join("tls.key"), &leaf.key, true)
}

fn mkdir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.display().to_string(),
        source,
    })
}

/// `weft certs`.
#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum CertsCommand {
    /// Make a development CA: DIR/ca.crt and DIR/ca.key.
    Ca(CaArgs),
    /// Issue a placement node's certificate (spiffe://TD/ns/NS/weft-placement).
    Placement(LeafArgs),
    /// Issue a sidecar's certificate for one app (spiffe://TD/ns/NS/APP_ID).
    Sidecar(SidecarCertArgs),
    /// Issue an operator's certificate for `weft cluster` (spiffe://TD/ns/NS/weft-admin).
    Admin(LeafArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CaArgs {
    /// Directory to write ca.crt and ca.key into.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, env = "WEFT_TLS_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Validity in days.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
    /// Replace an existing CA (every certificate it issued stops being trusted).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct LeafArgs {
    /// Directory of the CA (ca.crt, ca.key).
    #[arg(long)]
    pub ca: PathBuf,
    /// Directory to write tls.crt, tls.key and ca.crt into.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, env = "WEFT_TLS_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    #[arg(long, env = "WEFT_TLS_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Extra DNS names (only for clients that check names; Weft checks the SPIFFE ID).
    #[arg(long = "dns-name")]
    pub dns_names: Vec<String>,
    /// Validity in days (rotate before then: processes re-read changed files).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

#[derive(Args, Debug, Clone)]
pub struct SidecarCertArgs {
    /// The app id the sidecar serves (its certificate lets it register only as this app).
    #[arg(long)]
    pub app_id: String,
    #[command(flatten)]
    pub leaf: LeafArgs,
}

/// Runs one `weft certs` command; returns what to print.
pub fn run(args: &CertsArgs) -> Result<String, TlsError> {
    let (leaf, name) = match &args.command {
        CertsCommand::Ca(a) => {
            if !a.force && a.out.join("ca.key").exists() {
                return Err(TlsError::Config(format!(
                    "{} already holds a CA (ca.key); pass --force to replace it",
                    a.out.display()
                )));
            }
            // Checks the trust domain's syntax before anything is written.
            SpiffeId::new(&a.trust_domain, DEFAULT_NAMESPACE, ADMIN)?;
            write_ca(&a.out, &make_ca(&a.trust_domain, a.days)?)?;
            return Ok(format!(
                "wrote {}/ca.crt and ca.key (trust domain {})",
                a.out.display(),
                a.trust_domain
            ));
        }
        CertsCommand::Placement(l) => (l, PLACEMENT),
        CertsCommand::Admin(l) => (l, ADMIN),
        CertsCommand::Sidecar(s) => {
            if s.app_id == PLACEMENT || s.app_id == ADMIN {
                return Err(TlsError::Config(format!(
                    "`{}` is reserved and cannot be an app id",
                    s.app_id
                )));
            }
            (&s.leaf, s.app_id.as_str())
        }
    };
    let id = SpiffeId::new(&leaf.trust_domain, &leaf.namespace, name)?;
    let ca = read_ca(&leaf.ca)?;
    let pem = issue(&ca, &id, &leaf.dns_names, leaf.days)?;
    write_leaf(&leaf.out, &pem, &ca.cert)?;
    Ok(format!(
        "wrote {}/tls.crt, tls.key and ca.crt for {id}",
        leaf.out.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::identity_in;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn issued_certificates_carry_their_spiffe_id() {
        let ca = make_ca("cluster.local", 1).unwrap();
        let id = SpiffeId::new("cluster.local", "default", "orders").unwrap();
        let leaf = issue(&ca, &id, &["orders.svc".into()], 1).unwrap();
        let der = CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap();
        assert_eq!(identity_in(&der, "cluster.local").unwrap(), id);
        let other = identity_in(&der, "other.td").unwrap_err();
        assert!(other.contains("trust domain is not other.td"), "{other}");
    }

    #[test]
    fn a_ca_is_not_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let args = |force| CertsArgs {
            command: CertsCommand::Ca(CaArgs {
                out: dir.path().into(),
                trust_domain: "cluster.local".into(),
                days: 1,
                force,
            }),
        };
        run(&args(false)).unwrap();
        let e = run(&args(false)).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        run(&args(true)).unwrap();
    }

    #[test]
    fn reserved_names_are_not_app_ids() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(&CertsArgs {
            command: CertsCommand::Sidecar(SidecarCertArgs {
                app_id: PLACEMENT.into(),
                leaf: LeafArgs {
                    ca: dir.path().into(),
                    out: dir.path().join("x"),
                    trust_domain: "cluster.local".into(),
                    namespace: "default".into(),
                    dns_names: vec![],
                    days: 1,
                },
            }),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("reserved"), "{e}");
    }
}
