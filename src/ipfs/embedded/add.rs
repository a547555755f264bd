//! The embedded node's `add`: runs the UnixFS importer (or the CAR reader)
//! on `import`'s blocking thread, reporting entries as they are imported:
//! a path from disk, or an upload's parts as they arrive
//! ([`AddInput::Parts`] into [`unixfs::TreeImport`], [`AddInput::CarReader`]
//! into the CAR reader), read on that thread.
//! It must not pin beyond what `AddOpts::pin` asks, nor decide names
//! beyond Kubo's (and the wrapped add's) naming.

use std::sync::{Arc, Mutex};

use super::EmbeddedNode;
use crate::ipfs::parts::AddPart;
use crate::ipfs::unixfs::{self, UnixfsError};
use crate::ipfs::{AddEvent, AddInput, AddOpts, AddedContent, IpfsError, car, unwrapped_name};

impl EmbeddedNode {
    /// [`IpfsBackend::add`](crate::ipfs::IpfsBackend::add) for this node.
    pub(super) async fn add_input(
        &self,
        input: AddInput,
        opts: AddOpts,
    ) -> Result<AddedContent, IpfsError> {
        // The importer runs on `import`'s blocking thread; its entries
        // come back through this slot.
        let entries = Arc::new(Mutex::new(Vec::new()));
        let slot = Arc::clone(&entries);
        let AddOpts {
            pin,
            import,
            wrap,
            progress,
            events,
            push,
            blocks,
        } = opts;
        let mut added = self
            .import_blocks(pin && blocks.is_none(), false, push, blocks, move |sink| {
                let fail = |e: UnixfsError<IpfsError>| match e {
                    UnixfsError::Sink { source, .. } => source,
                    other => IpfsError::Unsupported {
                        what: format!("add: {other}"),
                    },
                };
                // The parts of an upload are named relative to the wrapping
                // directory already; a path's names start with the
                // directory that is wrapped.
                let unwrap = wrap && matches!(input, AddInput::Path(_));
                let mut report = |event: AddEvent| {
                    let event = match event {
                        AddEvent::Added(mut a) if unwrap => {
                            a.name = unwrapped_name(&a.name);
                            AddEvent::Added(a)
                        }
                        AddEvent::Progress { name, bytes } if unwrap => AddEvent::Progress {
                            name: unwrapped_name(&name),
                            bytes,
                        },
                        other => other,
                    };
                    if let Some(tx) = &events {
                        // A receiver that went away wants no more events.
                        let _ = tx.send(event);
                    }
                };
                let list = match input {
                    AddInput::Path(path) => {
                        let mut list =
                            unixfs::add_path_with(&path, &import, sink, progress, &mut report)
                                .map_err(fail)?;
                        if wrap {
                            for a in &mut list {
                                a.name = unwrapped_name(&a.name);
                            }
                        }
                        list
                    }
                    AddInput::Reader(reader) => {
                        let a = unixfs::add_reader(reader, &import, sink).map_err(fail)?;
                        report(AddEvent::Added(a.clone()));
                        vec![a]
                    }
                    AddInput::Car(path) => {
                        let file =
                            std::fs::File::open(&path).map_err(|e| IpfsError::InvalidInput {
                                what: format!("cannot read the car: {e}"),
                            })?;
                        let a = read_car(file, sink)?;
                        report(AddEvent::Added(a.clone()));
                        vec![a]
                    }
                    AddInput::CarReader(reader) => {
                        let a = read_car(reader, sink)?;
                        report(AddEvent::Added(a.clone()));
                        vec![a]
                    }
                    AddInput::Parts(mut parts) => {
                        // What the upload sent that cannot be imported is
                        // the client's error.
                        let refused = |e: UnixfsError<IpfsError>| match e {
                            UnixfsError::Sink { source, .. } => source,
                            e @ (UnixfsError::Entry { .. } | UnixfsError::Read(_)) => {
                                IpfsError::InvalidInput {
                                    what: e.to_string(),
                                }
                            }
                            other => fail(other),
                        };
                        let mut tree =
                            unixfs::TreeImport::new(&import, wrap, sink, progress, &mut report)
                                .map_err(fail)?;
                        let broke_off = |e: std::io::Error| IpfsError::InvalidInput {
                            what: format!("the upload broke off: {e}"),
                        };
                        loop {
                            let part = parts
                                .blocking_recv()
                                .ok_or_else(|| broke_off(std::io::ErrorKind::UnexpectedEof.into()))?
                                .map_err(broke_off)?;
                            match part {
                                AddPart::Dir(path) => tree.dir(&path),
                                AddPart::File { path, body } => tree.file(&path, body),
                                AddPart::End => break,
                            }
                            .map_err(refused)?;
                        }
                        tree.finish().map_err(refused)?
                    }
                };
                let root = list
                    .last()
                    .map(|a| a.cid)
                    .ok_or_else(|| IpfsError::Unsupported {
                        what: "add: nothing to import".into(),
                    })?;
                if let Ok(mut e) = slot.lock() {
                    *e = list;
                }
                Ok(root)
            })
            .await?;
        if let Ok(mut e) = entries.lock() {
            added.entries = std::mem::take(&mut *e);
        }
        Ok(added)
    }
}

/// Stores the blocks of the CAR read from `input`; its root as an entry
/// named `""`.
fn read_car(
    input: impl std::io::Read,
    sink: &mut dyn FnMut(cid::Cid, Vec<u8>) -> Result<(), IpfsError>,
) -> Result<unixfs::Added, IpfsError> {
    let summary = car::read(input, sink).map_err(|e| match e {
        car::CarError::Sink { source, .. } => source,
        other => IpfsError::InvalidInput {
            what: other.to_string(),
        },
    })?;
    Ok(unixfs::Added {
        cid: summary.root,
        size: summary.size,
        name: String::new(),
        bytes: summary.bytes,
    })
}
