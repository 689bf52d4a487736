//! Descriptor fixtures: real descriptors of C tor onion services, captured from a
//! [`TestNet`], with the metadata needed to verify and decrypt them offline.
//!
//! For each backend, `<name>.desc` holds the descriptor exactly as `GETINFO
//! hs/service/desc/id/<address>` returned it (the control protocol's CRLF line endings
//! turned back into tor's `\n`), and `<name>.toml` a [`FixtureMeta`]. Names are
//! `instance<i>` for Onionbalance instances and `plain<i>` for ordinary services.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use tor_checkable::TimeBound as _;
use tor_hscrypto::pk::{HsId, HsIdKey};
use tor_hscrypto::time::TimePeriod;
use tor_netdoc::doc::hsdesc::HsDesc;

use crate::testnet::TestNet;
use crate::torrc::VOTING_INTERVAL_SECS;

/// Length of a time period on the test network: 24 voting intervals (8 minutes).
pub const TIME_PERIOD_LENGTH_SECS: u64 = 24 * VOTING_INTERVAL_SECS as u64;
/// Offset of time periods from the Unix epoch: 12 voting intervals (4 minutes).
pub const TIME_PERIOD_OFFSET_SECS: u64 = 12 * VOTING_INTERVAL_SECS as u64;

/// What is known about a captured descriptor (the `<name>.toml` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixtureMeta {
    /// The fixture's name (file stem).
    pub name: String,
    /// The service's onion address, with `.onion`. Its subcredential decrypts the descriptor.
    pub onion_address: String,
    /// Whether the service ran with `HiddenServiceOnionBalanceInstance 1`.
    pub instance_mode: bool,
    /// For instances: the `MasterOnionAddress` of its `ob_config`.
    pub master_onion_address: Option<String>,
    /// For instances, if the harness generated the frontend key: the file (next to this one)
    /// holding it, PKCS#8 PEM. Test-only key, public on purpose.
    pub master_key_file: Option<String>,
    /// `tor --version` of the service (`GETINFO version`).
    pub tor_version: String,
    /// When the descriptor was captured (Unix seconds); it was valid then.
    pub captured_at_unix: u64,
    /// Time period length on the network it came from, in seconds.
    pub time_period_length_secs: u64,
    /// Offset of time periods from the Unix epoch, in seconds.
    pub time_period_epoch_offset_secs: u64,
    /// The time period (interval number) whose blinded key signed the descriptor.
    pub time_period_interval_num: u64,
    /// The descriptor's revision counter.
    pub revision_counter: u64,
    /// Number of introduction points in the decrypted descriptor.
    pub intro_points: usize,
}

impl FixtureMeta {
    /// The time period the descriptor is for, as Arti represents it.
    pub fn time_period(&self) -> Result<TimePeriod> {
        let minutes = u32::try_from(self.time_period_length_secs / 60)?;
        let offset = u32::try_from(self.time_period_epoch_offset_secs)?;
        Ok(TimePeriod::from_parts(
            minutes,
            self.time_period_interval_num,
            offset,
        ))
    }

    /// When the descriptor was captured.
    pub fn captured_at(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.captured_at_unix)
    }
}

/// What decrypting a descriptor found.
#[derive(Debug, Clone, Copy)]
pub struct Decrypted {
    /// The descriptor's revision counter.
    pub revision_counter: u64,
    /// Number of introduction points.
    pub intro_points: usize,
}

/// Verifies and decrypts `text` as the descriptor of `onion_address` for `period`, valid at
/// `when` (outer and inner signatures, blinded key, subcredential).
pub fn decrypt(
    text: &str,
    onion_address: &str,
    period: TimePeriod,
    when: SystemTime,
) -> Result<Decrypted> {
    let hsid: HsId = onion_address
        .parse()
        .map_err(|e| anyhow!("bad onion address {onion_address}: {e}"))?;
    let key = HsIdKey::try_from(hsid).map_err(|e| anyhow!("bad onion key: {e}"))?;
    let (blinded, subcredential) = key
        .compute_blinded_key(period)
        .map_err(|e| anyhow!("blinding: {e}"))?;
    let desc = HsDesc::parse_decrypt_validate(text, &blinded.id(), &subcredential, None)
        .map_err(|e| anyhow!("{e}"))?
        .if_valid_at(&when)
        .map_err(|e| anyhow!("not valid at capture time: {e}"))?;
    Ok(Decrypted {
        revision_counter: u64::from(desc.revision()),
        intro_points: desc.intro_points().len(),
    })
}

/// Captures every backend's current descriptor into `out_dir`; returns the files written.
pub async fn capture(net: &TestNet, out_dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let tor_version = net.tor_version().await?;
    // The frontend key, so that tests can build a frontend descriptor for these backends.
    let master_key_file = match net.frontend_key_path() {
        Some(key) => {
            let name = "master.pem";
            std::fs::copy(key, out_dir.join(name))
                .with_context(|| format!("copy {}", key.display()))?;
            Some(name.to_owned())
        }
        None => None,
    };
    let mut written = Vec::new();
    let (mut instances, mut plains) = (0, 0);
    for i in 0..net.backend_count() {
        let instance = net.backend_is_instance(i);
        let name = if instance {
            instances += 1;
            format!("instance{}", instances - 1)
        } else {
            plains += 1;
            format!("plain{}", plains - 1)
        };
        let text = net.backend_descriptor(i).await?;
        let now = SystemTime::now();
        let captured_at_unix = now.duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
        let address = net.backend_address(i).to_owned();

        // The descriptor may be for the current period or a neighbour (services publish for
        // two periods once an SRV exists): find the one whose blinded key signed it.
        let current = TimePeriod::new(
            Duration::from_secs(TIME_PERIOD_LENGTH_SECS),
            now,
            Duration::from_secs(TIME_PERIOD_OFFSET_SECS),
        )
        .map_err(|e| anyhow!("time period: {e}"))?;
        let candidates = [current.prev(), Some(current), current.next()];
        let mut found = None;
        for period in candidates.into_iter().flatten() {
            if let Ok(d) = decrypt(&text, &address, period, now) {
                found = Some((period, d));
                break;
            }
        }
        let Some((period, decrypted)) = found else {
            bail!("the descriptor of {address} does not verify for any time period near now");
        };

        let meta = FixtureMeta {
            name: name.clone(),
            onion_address: address,
            instance_mode: instance,
            master_onion_address: instance.then(|| net.frontend_address().to_owned()),
            master_key_file: master_key_file.clone().filter(|_| instance),
            tor_version: tor_version.clone(),
            captured_at_unix,
            time_period_length_secs: TIME_PERIOD_LENGTH_SECS,
            time_period_epoch_offset_secs: TIME_PERIOD_OFFSET_SECS,
            time_period_interval_num: period.interval_num(),
            revision_counter: decrypted.revision_counter,
            intro_points: decrypted.intro_points,
        };
        let desc_path = out_dir.join(format!("{name}.desc"));
        let meta_path = out_dir.join(format!("{name}.toml"));
        std::fs::write(&desc_path, &text)
            .with_context(|| format!("write {}", desc_path.display()))?;
        let meta_text = format!(
            "# Metadata of {name}.desc: a descriptor captured from C tor on a private test network\n\
             # (crates/testnet/src/fixtures.rs; regenerate with\n\
             #  `cargo run --example testnet -- --plain-backends 1 --capture-fixtures tests/fixtures/ctor-0.4.9`).\n{}",
            toml::to_string(&meta).context("serialize fixture metadata")?
        );
        std::fs::write(&meta_path, meta_text)
            .with_context(|| format!("write {}", meta_path.display()))?;
        eprintln!(
            "fixtures: {name}: {} (period {}, revision {}, {} intro points)",
            meta.onion_address,
            meta.time_period_interval_num,
            meta.revision_counter,
            meta.intro_points
        );
        written.push(desc_path);
        written.push(meta_path);
    }
    Ok(written)
}

/// Reads every `<name>.toml` + `<name>.desc` pair of a fixture directory.
pub fn load_all(dir: &Path) -> Result<Vec<(FixtureMeta, String)>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    for meta_path in paths {
        let meta: FixtureMeta = toml::from_str(
            &std::fs::read_to_string(&meta_path)
                .with_context(|| format!("read {}", meta_path.display()))?,
        )
        .with_context(|| format!("parse {}", meta_path.display()))?;
        let desc_path = meta_path.with_extension("desc");
        let text = std::fs::read_to_string(&desc_path)
            .with_context(|| format!("read {}", desc_path.display()))?;
        out.push((meta, text));
    }
    Ok(out)
}
