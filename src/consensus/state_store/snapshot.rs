//! Snapshots: the whole state machine as one file under
//! `<dir>/snapshots/`, written and installed as a stream.
//!
//! ```text
//! file  = header-line frame* end
//! header-line = JSON {"format":"pinfleet-snapshot","version":4,"meta":…} "\n"
//! frame = tag(u8) varint(len) payload
//! ```
//!
//! Frames carry the tables' raw rows — dictionaries, pin records, staged
//! chunks, PinSet, condition and commit records, Pinning Service requests
//! — so installing one is a
//! copy, not a re-encoding: the owner index is rebuilt from the records.
//! The `end` frame counts the pins, so a file cut short is refused.
//! Durability: the file is fsync'd, renamed into place and its directory
//! fsync'd before the store points at it; older snapshots are removed only
//! after that. Versions 1 and 2 (JSON lines) are still installed.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use openraft::{LogId, SnapshotMeta, StoredMembership};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::records::{DICT, DICT_BY_VALUE, OPTIONS, RawRecord, cid_of, put_varint};
use super::txn::{NEXT_ID, TxnStore, split_options_row};
use super::{
    COMMITS, CONDITIONS, DICT_EPOCH, LAST_APPLIED, MEMBERSHIP, NodeId, OWNER_INDEX, PINS, PINSETS,
    PeerNode, SHARD_INDEX, SM_META, SNAPSHOT, STAGING, StateStore, StoreResult, changes, read_err,
    write_err,
};
use crate::manifest::{CidKey, Owner, PinSpec};
use crate::state::{CommitRecord, ConditionsRecord, Op, PinSetRecord, PinStore, StatePin};

/// Snapshot file format version; bump on any incompatible change.
/// Version 3 is binary frames of raw rows; version 4 adds Pinning Service
/// request frames (a version 3 file is installed as is, it has none);
/// versions 1 (JSON lines) and 2 (JSON lines with commit records) are
/// still read.
pub const SNAPSHOT_VERSION: u32 = 4;

const FRAME_DICT: u8 = 1;
const FRAME_PIN: u8 = 2;
const FRAME_STAGED: u8 = 3;
const FRAME_PINSET: u8 = 4;
const FRAME_CONDITIONS: u8 = 5;
const FRAME_COMMITS: u8 = 6;
/// A Pinning Service request record (its indexes are rebuilt).
const FRAME_PINSVC: u8 = 7;
const FRAME_END: u8 = 0xff;

/// Largest frame accepted when installing (a pin record, a staged chunk
/// of at most one log entry, a record).
const MAX_FRAME: u64 = 256 << 20;

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    format: String,
    version: u32,
    meta: SnapshotMeta<NodeId, PeerNode>,
}

/// A record of the JSON-lines snapshots (versions 1 and 2).
#[derive(Deserialize)]
#[serde(tag = "t")]
enum LegacyRecord {
    #[serde(rename = "pin")]
    Pin { cid: CidKey, pin: LegacyStoredPin },
    #[serde(rename = "staged")]
    Staged {
        owner: String,
        revision: u64,
        seq: u32,
        chunk: LegacyChunk,
    },
    #[serde(rename = "pinset")]
    PinSet { owner: String, record: PinSetRecord },
    #[serde(rename = "conditions")]
    Conditions {
        owner: String,
        record: ConditionsRecord,
    },
    #[serde(rename = "commits")]
    Commits { owner: String, record: CommitRecord },
}

#[derive(Deserialize)]
struct LegacyStoredPin {
    #[serde(default)]
    w: Option<Box<str>>,
    o: std::collections::BTreeMap<Owner, PinSpec>,
    #[serde(default)]
    a: Vec<String>,
    t: i64,
}

#[derive(Deserialize)]
struct LegacyChunk {
    at: i64,
    ops: Vec<Op>,
}

fn frame(w: &mut impl Write, tag: u8, parts: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut head = vec![tag];
    put_varint(&mut head, len as u64);
    w.write_all(&head)?;
    for p in parts {
        w.write_all(p)?;
    }
    Ok(())
}

fn with_len(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 4);
    put_varint(&mut out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    out
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl StateStore {
    /// Writes the current state to a new snapshot file (one read
    /// transaction: a consistent cut) and makes it the current snapshot.
    pub(super) fn write_snapshot_file(
        &self,
    ) -> StoreResult<(SnapshotMeta<NodeId, PeerNode>, std::path::PathBuf)> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let meta_table = txn.open_table(SM_META).map_err(read_err)?;
        let get_meta = |key: &str| -> StoreResult<Option<Vec<u8>>> {
            Ok(meta_table
                .get(key)
                .map_err(read_err)?
                .map(|v| v.value().to_vec()))
        };
        let last_applied: Option<LogId<NodeId>> = match get_meta(LAST_APPLIED)? {
            Some(b) => serde_json::from_slice(&b).map_err(read_err)?,
            None => None,
        };
        let membership: StoredMembership<NodeId, PeerNode> = match get_meta(MEMBERSHIP)? {
            Some(b) => serde_json::from_slice(&b).map_err(read_err)?,
            None => StoredMembership::default(),
        };
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, rand::random::<u32>()),
            None => format!("0-0-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let path = self.snapshot_dir.join(format!("{}.snap", meta.snapshot_id));
        let tmp = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp).map_err(write_err)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let header = SnapshotHeader {
            format: "pinfleet-snapshot".into(),
            version: SNAPSHOT_VERSION,
            meta: meta.clone(),
        };
        serde_json::to_writer(&mut w, &header).map_err(write_err)?;
        w.write_all(b"\n").map_err(write_err)?;

        let dict = txn.open_table(DICT).map_err(read_err)?;
        for item in dict.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let (kind, id) = k.value();
            let mut head = vec![kind];
            head.extend_from_slice(&id.to_le_bytes());
            frame(&mut w, FRAME_DICT, &[&head, v.value()]).map_err(write_err)?;
        }
        let pins = txn.open_table(PINS).map_err(read_err)?;
        let mut count = 0u64;
        for item in pins.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            frame(&mut w, FRAME_PIN, &[&with_len(k.value()), v.value()]).map_err(write_err)?;
            count += 1;
        }
        let staging = txn.open_table(STAGING).map_err(read_err)?;
        for item in staging.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            let (owner, revision, seq) = k.value();
            let mut head = with_len(owner.as_bytes());
            head.extend_from_slice(&revision.to_le_bytes());
            head.extend_from_slice(&seq.to_le_bytes());
            frame(&mut w, FRAME_STAGED, &[&head, v.value()]).map_err(write_err)?;
        }
        for (tag, table) in [
            (FRAME_PINSET, PINSETS),
            (FRAME_CONDITIONS, CONDITIONS),
            (FRAME_COMMITS, COMMITS),
        ] {
            let table = txn.open_table(table).map_err(read_err)?;
            for item in table.iter().map_err(read_err)? {
                let (k, v) = item.map_err(read_err)?;
                frame(&mut w, tag, &[&with_len(k.value().as_bytes()), v.value()])
                    .map_err(write_err)?;
            }
        }
        super::pinsvc::each_record(&txn, |v| frame(&mut w, FRAME_PINSVC, &[v]))?;
        frame(&mut w, FRAME_END, &[&count.to_le_bytes()]).map_err(write_err)?;
        let file = w.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(write_err)?;
        sync_dir(&self.snapshot_dir).map_err(write_err)?;
        self.set_current_snapshot(&meta)?;
        Ok((meta, path))
    }

    /// Records `meta` as the current snapshot, then removes older files.
    fn set_current_snapshot(&self, meta: &SnapshotMeta<NodeId, PeerNode>) -> StoreResult<()> {
        let txn = self.db.begin_write().map_err(write_err)?;
        {
            let mut t = txn.open_table(SM_META).map_err(write_err)?;
            let bytes = serde_json::to_vec(meta).map_err(write_err)?;
            t.insert(SNAPSHOT, bytes.as_slice()).map_err(write_err)?;
        }
        txn.commit().map_err(write_err)?;
        // Older snapshot files are no longer needed: the store points at the
        // new one, which is on disk (file and directory fsync'd).
        if let Ok(dir) = std::fs::read_dir(&self.snapshot_dir) {
            let keep = format!("{}.snap", meta.snapshot_id);
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".snap") && name != keep {
                    let _ = std::fs::remove_file(e.path()); // best effort: a stale file is only disk space
                }
            }
        }
        Ok(())
    }

    /// Replaces the whole state with the snapshot at `src` (one write
    /// transaction: readers see the old state or the new one).
    pub(super) fn install_from(
        &self,
        meta: &SnapshotMeta<NodeId, PeerNode>,
        src: &Path,
    ) -> StoreResult<()> {
        let file = std::fs::File::open(src).map_err(read_err)?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut line = String::new();
        r.read_line(&mut line).map_err(read_err)?;
        let header: SnapshotHeader = serde_json::from_str(line.trim_end()).map_err(read_err)?;
        if header.format != "pinfleet-snapshot" || !(1..=SNAPSHOT_VERSION).contains(&header.version)
        {
            return Err(read_err(std::io::Error::other(format!(
                "unsupported snapshot {} version {}",
                header.format, header.version
            ))));
        }
        let txn = self.db.begin_write().map_err(write_err)?;
        txn.delete_table(PINS).map_err(write_err)?;
        for t in [PINSETS, CONDITIONS, COMMITS] {
            txn.delete_table(t).map_err(write_err)?;
        }
        txn.delete_table(OWNER_INDEX).map_err(write_err)?;
        txn.delete_table(SHARD_INDEX).map_err(write_err)?;
        txn.delete_table(STAGING).map_err(write_err)?;
        super::pinsvc::clear(&txn).map_err(write_err)?;
        txn.delete_table(DICT).map_err(write_err)?;
        txn.delete_table(DICT_BY_VALUE).map_err(write_err)?;
        if header.version >= 3 {
            install_frames(&txn, &mut r)?;
            // Frames carry the records, not the shard index.
            let fresh = super::records::SharedDict::default();
            super::txn::rebuild_shard_index(&txn, &fresh).map_err(write_err)?;
        } else {
            // A cache of its own: the shared one knows the old ids.
            let fresh = super::records::SharedDict::default();
            let mut store = TxnStore::open(&txn, &fresh).map_err(write_err)?;
            install_lines(&mut store, r)?;
            store.finish().map_err(write_err)?;
        }
        // The feed is not in snapshots: consumers compare everything.
        changes::reset(&txn).map_err(write_err)?;
        {
            let mut m = txn.open_table(SM_META).map_err(write_err)?;
            let last = serde_json::to_vec(&meta.last_log_id).map_err(write_err)?;
            m.insert(LAST_APPLIED, last.as_slice()).map_err(write_err)?;
            let mem = serde_json::to_vec(&meta.last_membership).map_err(write_err)?;
            m.insert(MEMBERSHIP, mem.as_slice()).map_err(write_err)?;
            // Ids now mean what the snapshot's dictionaries say: a new
            // epoch, so no cached entry of the old ones is used again.
            let epoch = super::epoch_of(&m).map_err(read_err)? + 1;
            m.insert(DICT_EPOCH, epoch.to_le_bytes().as_slice())
                .map_err(write_err)?;
        }
        txn.commit().map_err(write_err)?;
        let dest = self.snapshot_dir.join(format!("{}.snap", meta.snapshot_id));
        if src != dest {
            std::fs::copy(src, &dest).map_err(write_err)?;
            std::fs::File::open(&dest)
                .and_then(|f| f.sync_all())
                .map_err(write_err)?;
            sync_dir(&self.snapshot_dir).map_err(write_err)?;
            let _ = std::fs::remove_file(src); // the received temp file; best effort
        }
        self.set_current_snapshot(meta)
    }
}

/// Installs the frames of a version 3 snapshot into emptied tables.
fn install_frames(txn: &redb::WriteTransaction, r: &mut impl Read) -> StoreResult<()> {
    let mut dict = txn.open_table(DICT).map_err(write_err)?;
    let mut by_value = txn.open_table(DICT_BY_VALUE).map_err(write_err)?;
    let mut pins = txn.open_table(PINS).map_err(write_err)?;
    let mut index = txn.open_table(OWNER_INDEX).map_err(write_err)?;
    let mut staging = txn.open_table(STAGING).map_err(write_err)?;
    let mut pinsets = txn.open_table(PINSETS).map_err(write_err)?;
    let mut conditions = txn.open_table(CONDITIONS).map_err(write_err)?;
    let mut commits = txn.open_table(COMMITS).map_err(write_err)?;
    let mut pinsvc = super::pinsvc::Tables::open(txn).map_err(write_err)?;
    let bad = |m: &str| read_err(std::io::Error::other(format!("snapshot: {m}")));
    let mut pins_seen = 0u64;
    let mut buf = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        if r.read_exact(&mut tag).is_err() {
            return Err(bad("ends before its end frame (cut short?)"));
        }
        let len = read_varint(r).map_err(read_err)?;
        if len > MAX_FRAME {
            return Err(bad(&format!("frame of {len} bytes")));
        }
        buf.resize(len as usize, 0);
        r.read_exact(&mut buf).map_err(read_err)?;
        let mut p = super::records::Reader(&buf);
        match tag[0] {
            FRAME_DICT => {
                let kind = p.byte().map_err(read_err)?;
                let id_bytes = p.take(8).map_err(read_err)?;
                let mut id = [0u8; 8];
                id.copy_from_slice(id_bytes);
                let id = u64::from_le_bytes(id);
                let value = p.0;
                dict.insert((kind, id), value).map_err(write_err)?;
                if id != NEXT_ID {
                    let key = if kind == OPTIONS {
                        split_options_row(value).map_err(write_err)?.1
                    } else {
                        value
                    };
                    by_value.insert((kind, key), id).map_err(write_err)?;
                }
            }
            FRAME_PIN => {
                let klen = p.varint().map_err(read_err)?;
                let key = p.take(klen).map_err(read_err)?;
                let value = p.0;
                let record = RawRecord::decode(value).map_err(read_err)?;
                cid_of(key).map_err(read_err)?;
                for (owner, _, _) in &record.owners {
                    index.insert((*owner, key), ()).map_err(write_err)?;
                }
                pins.insert(key, value).map_err(write_err)?;
                pins_seen += 1;
            }
            FRAME_STAGED => {
                let olen = p.varint().map_err(read_err)?;
                let owner = p.str(olen).map_err(read_err)?;
                let rev = p.take(8).map_err(read_err)?;
                let seq = p.take(4).map_err(read_err)?;
                let mut rb = [0u8; 8];
                rb.copy_from_slice(rev);
                let mut sb = [0u8; 4];
                sb.copy_from_slice(seq);
                staging
                    .insert((owner, u64::from_le_bytes(rb), u32::from_le_bytes(sb)), p.0)
                    .map_err(write_err)?;
            }
            FRAME_PINSET | FRAME_CONDITIONS | FRAME_COMMITS => {
                let olen = p.varint().map_err(read_err)?;
                let owner = p.str(olen).map_err(read_err)?;
                let table = match tag[0] {
                    FRAME_PINSET => &mut pinsets,
                    FRAME_CONDITIONS => &mut conditions,
                    _ => &mut commits,
                };
                table.insert(owner, p.0).map_err(write_err)?;
            }
            FRAME_PINSVC => {
                pinsvc.install(p.0).map_err(write_err)?;
            }
            FRAME_END => {
                let n = p.take(8).map_err(read_err)?;
                let mut nb = [0u8; 8];
                nb.copy_from_slice(n);
                if u64::from_le_bytes(nb) != pins_seen {
                    return Err(bad("pin count differs from its end frame"));
                }
                return Ok(());
            }
            other => return Err(bad(&format!("unknown frame {other}"))),
        }
    }
}

fn read_varint(r: &mut impl Read) -> std::io::Result<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        value |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(std::io::Error::other("overlong varint"))
}

/// Installs the JSON lines of a version 1 or 2 snapshot, re-encoding each
/// record.
fn install_lines(store: &mut TxnStore<'_>, r: impl BufRead) -> StoreResult<()> {
    for l in r.lines() {
        let l = l.map_err(read_err)?;
        if l.is_empty() {
            continue;
        }
        match serde_json::from_str::<LegacyRecord>(&l).map_err(read_err)? {
            LegacyRecord::Pin { cid, pin } => {
                let pin = StatePin {
                    cid,
                    written_as: pin.w,
                    owners: pin.o,
                    allocations: pin.a,
                    timestamp_ms: pin.t,
                };
                store.put_fresh(&pin).map_err(write_err)?;
            }
            LegacyRecord::Staged {
                owner,
                revision,
                seq,
                chunk,
            } => {
                let owner: Owner = owner.parse().map_err(read_err)?;
                store
                    .stage(&owner, revision, seq, chunk.at, &chunk.ops)
                    .map_err(write_err)?;
            }
            LegacyRecord::PinSet { owner, record } => {
                let owner: Owner = owner.parse().map_err(read_err)?;
                store.set_pinset(&owner, Some(&record)).map_err(write_err)?;
            }
            LegacyRecord::Conditions { owner, record } => {
                let owner: Owner = owner.parse().map_err(read_err)?;
                store
                    .set_conditions(&owner, Some(&record))
                    .map_err(write_err)?;
            }
            LegacyRecord::Commits { owner, record } => {
                let owner: Owner = owner.parse().map_err(read_err)?;
                store.set_commits(&owner, &record).map_err(write_err)?;
            }
        }
    }
    Ok(())
}
