//! Downloading into a local file: chunks are written at their offsets into `DEST.part`, which is
//! renamed to `DEST` only when complete, so a file under the final name is never partial.
//!
//! `DEST.part.json` records which chunks are on disk and for which ETag. An interrupted
//! download (an error, Ctrl-C, a kill) resumes from it, with the chunk size it started with,
//! when the object's ETag, version and size still match; otherwise it starts over. Processes
//! downloading to the same `DEST` take turns (see `lock`): one fetches, the others find it done.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::lock::{Acquired, DestLock};
use super::object::Object;
use super::plan;
use super::sink::FileWriter;
use super::stat::ObjectInfo;
use super::task::{blocking, local_io};
use crate::error::{Error, Result};
use crate::location::{Location, special_file};
use crate::streams::spawn;

/// How often the resume state is saved while chunks complete.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The version of an object a download is of: what a resume and a process waiting on the
/// destination's lock compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pinned {
    pub etag: String,
    pub version: Option<String>,
    pub size: u64,
}

/// What `DEST.part.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartState {
    #[serde(flatten)]
    object: Pinned,
    chunk_size: u64,
    /// Indices of the chunks on disk.
    done: BTreeSet<usize>,
}

/// The two names next to a destination: the data being written and its resume state.
#[derive(Debug, Clone)]
pub(crate) struct PartPaths {
    pub data: PathBuf,
    pub state: PathBuf,
}

impl PartPaths {
    pub(crate) fn for_dest(dest: &Path) -> Self {
        let with_suffix = |suffix: &str| {
            let mut name = dest.file_name().unwrap_or_default().to_os_string();
            name.push(suffix);
            dest.with_file_name(name)
        };
        Self {
            data: with_suffix(".part"),
            state: with_suffix(".part.json"),
        }
    }
}

impl Object {
    /// Downloads the object to the local file `dest` (parent directories are created), or
    /// into the directory `dest` names (an existing one, or a path ending in `/`) under the
    /// object's own file name.
    ///
    /// Chunks are written at their offsets into `dest` + `.part`, which is renamed to `dest`
    /// only when every byte is there; an interrupted download resumes from the `.part` file
    /// when the object's ETag still matches. Memory in flight stays within
    /// `concurrency × chunk_size`.
    ///
    /// # Errors
    ///
    /// [`Error::LocalIo`] for a destination that cannot be written; otherwise as a range read.
    /// On error the `.part` file is kept for a later resume, and `dest` is untouched.
    ///
    /// A destination that exists and is not a regular file (`/dev/null`, a FIFO) is written
    /// through, in order, instead: it is never replaced by a renamed file.
    pub async fn download_to(&self, dest: &Path) -> Result<ObjectInfo> {
        let dest = &file_dest(dest, self.location())?;
        if special_file(dest).is_some() {
            return self.write_into(dest).await;
        }
        let info = self.info().clone();
        let source = Arc::clone(self.source());
        let chunk_size = plan::chunk_size_for(info.size, source.options.chunk_size);
        let paths = PartPaths::for_dest(dest);
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(local_io(parent, "create the directory"))?;
        }
        let progress = &source.options.progress;
        let pinned = info.etag.clone().map(|etag| Pinned {
            etag,
            version: info.version.clone(),
            size: info.size,
        });
        let lock = match DestLock::acquire(dest, pinned.clone()).await? {
            Acquired::Owned(lock) => lock,
            Acquired::Done => {
                tracing::info!(uri = %source.location, "{} was completed by another process meanwhile", dest.display());
                progress.started(&source.location.uri(), info.size);
                progress.advanced(info.size);
                progress.finished();
                return Ok(info);
            }
        };

        let resumable = pinned.clone().map(|object| PartState {
            object,
            chunk_size,
            done: BTreeSet::new(),
        });
        let (file, state) = open_part(&paths, resumable)?;
        let file = Arc::new(file);
        let chunk_size = state.as_ref().map_or(chunk_size, |s| s.chunk_size);
        let chunks = plan::chunks(info.size, chunk_size);
        let already: u64 = state.as_ref().map_or(0, |s| {
            s.done
                .iter()
                .map(|&i| chunks[i].end - chunks[i].start)
                .sum()
        });

        progress.started(&source.location.uri(), info.size);
        if already > 0 {
            tracing::info!(uri = %source.location, bytes = already, "resuming from {}", paths.data.display());
            progress.advanced(already);
        }

        let todo: Vec<(usize, std::ops::Range<u64>)> = chunks
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, _)| !state.as_ref().is_some_and(|s| s.done.contains(i)))
            .collect();
        let mut written = stream::iter(todo)
            .map(|(index, range)| {
                let source = Arc::clone(&source);
                let mut writer =
                    FileWriter::new(Arc::clone(&file), paths.data.clone(), range.start);
                spawn(async move {
                    source.fill(range, &mut writer).await?;
                    writer.flush().await?;
                    Ok::<_, Error>(index)
                })
            })
            .buffer_unordered(source.options.in_flight());

        let mut resume = Resume {
            file: Arc::clone(&file),
            paths: paths.clone(),
            state,
            last_save: Instant::now(),
        };
        let chunked = async {
            while let Some(index) = written.next().await.transpose()? {
                resume.chunk_done(index).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        drop(written);
        match chunked {
            // Every range was refused before a byte of it came: the whole object, in one
            // stream (which no later run can resume, as no range can be asked for).
            Err(err) if err.is_ranges_ignored() => {
                tracing::warn!(uri = %source.location, "the server ignores Range requests: downloading in one stream");
                resume.disarm();
                let mut writer = FileWriter::new(Arc::clone(&file), paths.data.clone(), 0);
                source.fill(0..info.size, &mut writer).await?;
                writer.flush().await?;
            }
            other => other?,
        }
        resume.disarm();

        blocking(&paths.data, "flush", move || file.sync_all()).await?;
        std::fs::rename(&paths.data, dest)
            .map_err(local_io(dest, "rename the finished .part file into place"))?;
        match std::fs::remove_file(&paths.state) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(local_io(&paths.state, "remove")(e));
            }
            _ => {}
        }
        lock.finish(pinned.as_ref());
        progress.finished();
        Ok(info)
    }

    /// Writes the object in order into `dest`, which is not a regular file (`/dev/null`, a
    /// FIFO, `/dev/stdout`): it is opened and written through, never renamed over, so the
    /// device or pipe stays what it is. Nothing to resume: a rerun starts over.
    async fn write_into(&self, dest: &Path) -> Result<ObjectInfo> {
        use tokio::io::AsyncWriteExt as _;
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(dest)
            .await
            .map_err(local_io(dest, "open for writing"))?;
        let mut pieces = self.stream();
        while let Some(piece) = pieces.next().await {
            let (_, bytes) = piece?;
            file.write_all(&bytes)
                .await
                .map_err(local_io(dest, "write"))?;
        }
        file.flush().await.map_err(local_io(dest, "write"))?;
        Ok(self.info().clone())
    }
}

/// `dest`, or the object's file name inside it when it names a directory (an existing one, or
/// a path ending in `/`). Decided before a byte is fetched.
fn file_dest(dest: &Path, location: &Location) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt as _;
    if !(dest.as_os_str().as_bytes().ends_with(b"/") || dest.is_dir()) {
        return Ok(dest.to_path_buf());
    }
    match location.path().filename() {
        Some(name) => Ok(dest.join(name)),
        None => Err(Error::InvalidArgument {
            what: location.uri(),
            reason: format!(
                "names no file to put into the directory {}; give the destination a file name",
                dest.display()
            ),
        }),
    }
}

/// The resume state of a download in progress. Saved every [`SAVE_EVERY`] as chunks land, and
/// on drop — an error, or the download's future dropped by Ctrl-C — so a rerun continues
/// where this one stopped.
struct Resume {
    file: Arc<File>,
    paths: PartPaths,
    state: Option<PartState>,
    last_save: Instant,
}

impl Resume {
    async fn chunk_done(&mut self, index: usize) -> Result<()> {
        let Some(state) = self.state.as_mut() else {
            return Ok(());
        };
        state.done.insert(index);
        if self.last_save.elapsed() >= SAVE_EVERY {
            let (file, paths, state) = (Arc::clone(&self.file), self.paths.clone(), state.clone());
            let state_path = paths.state.clone();
            blocking(&state_path, "save the resume state", move || {
                save_state(&file, &paths, &state)
            })
            .await?;
            self.last_save = Instant::now();
        }
        Ok(())
    }

    /// The download completed: nothing to resume.
    fn disarm(&mut self) {
        self.state = None;
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            // Blocking, but only on the way out of a failed or cancelled download.
            if let Err(err) = save_state(&self.file, &self.paths, state) {
                tracing::warn!(path = %self.paths.state.display(), %err, "cannot save the resume state");
            }
        }
    }
}

/// Opens `DEST.part` to continue from, when its saved state matches `fresh`; otherwise
/// creates it anew, sized to the object. Returns the file and the state to keep updating
/// (`None` when the object has no ETag, so a resume could not be trusted).
fn open_part(paths: &PartPaths, fresh: Option<PartState>) -> Result<(File, Option<PartState>)> {
    if let Some(fresh) = &fresh {
        let saved: Option<PartState> = read_no_follow(&paths.state)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        // The chunk size may differ from this run's: the saved one is kept. A state naming
        // chunks the object does not have is not ours to trust.
        let matches = saved.as_ref().is_some_and(|s| {
            s.object == fresh.object
                && plan::chunk_size_for(s.object.size, s.chunk_size) == s.chunk_size
                && s.done
                    .last()
                    .is_none_or(|&last| (last as u64) < s.object.size.div_ceil(s.chunk_size))
        });
        if let (true, Some(saved)) = (matches, saved)
            && let Ok(file) = no_follow(OpenOptions::new().read(true).write(true)).open(&paths.data)
            && file.metadata().is_ok_and(|m| m.len() == fresh.object.size)
        {
            return Ok((file, Some(saved)));
        }
    }
    let _ = std::fs::remove_file(&paths.state);
    // Whatever is there (a planted link included) is removed, not written through: unlinking
    // a link removes the link, and a new file is created only where nothing is.
    let _ = std::fs::remove_file(&paths.data);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&paths.data)
        .map_err(local_io(&paths.data, "create"))?;
    let size = fresh.as_ref().map(|s| s.object.size);
    if let Some(size) = size {
        file.set_len(size).map_err(local_io(&paths.data, "size"))?;
    }
    Ok((file, fresh))
}

/// Makes the chunks recorded in `state` durable, then records them: the state never claims a
/// chunk the disk does not hold.
fn save_state(file: &File, paths: &PartPaths, state: &PartState) -> io::Result<()> {
    file.sync_data()?;
    let json = serde_json::to_vec(state).map_err(io::Error::other)?;
    let tmp = paths.state.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?
        .write_all(&json)?;
    // A rename replaces a link at the destination; it never writes through one.
    std::fs::rename(&tmp, &paths.state)
}

/// `options`, refusing to open a symbolic link.
fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options
}

/// The bytes of the file at `path`, unless it is a symbolic link.
fn read_no_follow(path: &Path) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    no_follow(OpenOptions::new().read(true))
        .open(path)?
        .read_to_end(&mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FetchOptions;

    async fn object(name: &str, data: Vec<u8>) -> Object {
        let options = FetchOptions {
            chunk_size: 10,
            concurrency: 2,
            ..FetchOptions::default()
        };
        crate::testing::memory_object(&format!("file/{name}"), data, options).await
    }

    #[test]
    fn part_paths_sit_next_to_the_destination() {
        let p = PartPaths::for_dest(Path::new("/d/model.safetensors"));
        assert_eq!(p.data, Path::new("/d/model.safetensors.part"));
        assert_eq!(p.state, Path::new("/d/model.safetensors.part.json"));
    }

    #[tokio::test]
    async fn download_writes_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..95u8).collect();
        let dest = dir.path().join("sub/out.bin");
        object("whole", data.clone())
            .await
            .download_to(&dest)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.bin"]);
    }

    /// What an earlier run left next to `dest`: `part` as `DEST.part`, and a state naming
    /// `done` chunks of `chunk_size` bytes of a 95-byte object with `etag`.
    fn leave_part(
        dest: &Path,
        part: &[u8],
        etag: &str,
        chunk_size: u64,
        done: &[usize],
    ) -> PartPaths {
        let paths = PartPaths::for_dest(dest);
        std::fs::write(&paths.data, part).unwrap();
        let state = PartState {
            object: Pinned {
                etag: etag.to_owned(),
                version: None,
                size: 95,
            },
            chunk_size,
            done: done.iter().copied().collect(),
        };
        std::fs::write(&paths.state, serde_json::to_vec(&state).unwrap()).unwrap();
        paths
    }

    #[tokio::test]
    async fn a_matching_part_file_is_resumed_without_refetching_done_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..95u8).collect();
        let object = object("resume", data.clone()).await;
        let dest = dir.path().join("out.bin");
        // A previous run wrote chunks 0 and 3, but with a marker byte instead of the data: a
        // resumed download keeps what the state says is done, so the marker survives.
        let mut part = data.clone();
        part[0] = 0xEE;
        let etag = object.info().etag.clone().unwrap();
        let paths = leave_part(&dest, &part, &etag, 10, &[0, 3]);
        object.download_to(&dest).await.unwrap();
        assert_eq!(
            std::fs::read(&dest).unwrap()[0],
            0xEE,
            "chunk 0 was not fetched again"
        );
        assert!(!paths.state.exists() && !paths.data.exists());
    }

    #[tokio::test]
    async fn a_resume_keeps_the_chunk_size_it_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..95u8).collect();
        let object = object("rechunk", data.clone()).await;
        let dest = dir.path().join("out.bin");
        let mut part = data.clone();
        part[30] = 0xEE;
        // Written with 30-byte chunks; this run asks for 10-byte ones.
        leave_part(&dest, &part, &object.info().etag.clone().unwrap(), 30, &[1]);
        object.download_to(&dest).await.unwrap();
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(got[30], 0xEE, "bytes 30..60 were kept");
        assert_eq!(got[..30], data[..30]);
        assert_eq!(got[60..], data[60..]);
    }

    #[tokio::test]
    async fn a_corrupt_resume_state_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..95u8).collect();
        let object = object("corrupt", data.clone()).await;
        let dest = dir.path().join("out.bin");
        let etag = object.info().etag.clone().unwrap();
        let paths = leave_part(&dest, &[0xEE; 95], &etag, 10, &[3, 10_000]);
        object.download_to(&dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        std::fs::write(&paths.state, b"{not json").unwrap();
        std::fs::write(&paths.data, vec![0xEE; 95]).unwrap();
        object.download_to(&dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
    }

    #[tokio::test]
    async fn a_part_file_for_another_etag_is_started_over() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..95u8).collect();
        let object = object("stale", data.clone()).await;
        let dest = dir.path().join("out.bin");
        let all: Vec<usize> = (0..10).collect();
        leave_part(&dest, &[0xEE; 95], "\"other\"", 10, &all);
        object.download_to(&dest).await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
    }

    #[tokio::test]
    async fn a_directory_destination_takes_the_objects_name_before_anything_is_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..95u8).collect();
        let object = object("named.bin", data.clone()).await;
        let fresh = format!("{}/new/", dir.path().display());
        for dest in [dir.path().to_path_buf(), PathBuf::from(&fresh)] {
            object.download_to(&dest).await.unwrap();
            assert_eq!(std::fs::read(dest.join("named.bin")).unwrap(), data);
        }
        assert_eq!(names(dir.path()), ["named.bin", "new"]);
        assert_eq!(names(&dir.path().join("new")), ["named.bin"]);
    }

    /// `name` in memory, put once, opened `n` times from one counted location.
    async fn shared(
        name: &str,
        data: &[u8],
        n: usize,
    ) -> (Vec<Object>, Arc<crate::location::Counts>) {
        let loc =
            crate::location::resolve(&format!("memory://file-lock/{name}"), &Default::default())
                .unwrap();
        use object_store::ObjectStoreExt;
        loc.store()
            .put(loc.path(), data.to_vec().into())
            .await
            .unwrap();
        let (loc, counts) = loc.counted();
        let options = FetchOptions {
            chunk_size: 10,
            concurrency: 2,
            ..FetchOptions::default()
        };
        let mut objects = Vec::new();
        for _ in 0..n {
            objects.push(Object::open(&loc, options.clone()).await.unwrap());
        }
        (objects, counts)
    }

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn downloads_to_one_destination_take_turns_and_fetch_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let data: Vec<u8> = (0..95u8).collect();
        let (objects, counts) = shared("turns", &data, 3).await;
        let before = counts.gets();
        let results = futures::future::join_all(objects.iter().map(|o| o.download_to(&dest))).await;
        for result in results {
            result.unwrap();
        }
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert_eq!(
            counts.gets() - before,
            10,
            "one download: 10 ranges of 10 bytes"
        );
        assert_eq!(names(dir.path()), ["out.bin"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_download_waiting_on_an_owner_that_gives_up_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let data: Vec<u8> = (0..95u8).collect();
        let (mut objects, _) = shared("gives-up", &data, 1).await;
        let object = objects.pop().unwrap();
        let Acquired::Owned(held) = DestLock::acquire(&dest, None).await.unwrap() else {
            panic!("nobody else holds it");
        };
        let waiting = tokio::spawn({
            let dest = dest.clone();
            async move { object.download_to(&dest).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "waits for the lock");
        drop(held);
        waiting.await.unwrap().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert_eq!(names(dir.path()), ["out.bin"]);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_planted_link_for_the_lock_file_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let dest = dir.path().join("out.bin");
        std::os::unix::fs::symlink(&victim, DestLock::path_for(&dest)).unwrap();
        let data: Vec<u8> = (0..95u8).collect();
        object("planted-lock", data.clone())
            .await
            .download_to(&dest)
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(std::fs::read(&dest).unwrap(), data);
        assert_eq!(names(dir.path()), ["out.bin", "victim"]);
    }

    #[cfg(unix)]
    #[test]
    fn planted_links_for_the_part_and_state_files_are_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let paths = PartPaths::for_dest(&dir.path().join("out.bin"));
        for planted in [
            &paths.data,
            &paths.state,
            &paths.state.with_extension("json.tmp"),
        ] {
            std::os::unix::fs::symlink(&victim, planted).unwrap();
        }
        let state = PartState {
            object: Pinned {
                etag: "\"e\"".into(),
                version: None,
                size: 4,
            },
            chunk_size: 2,
            done: [0].into(),
        };
        let (file, _) = open_part(&paths, Some(state.clone())).unwrap();
        save_state(&file, &paths, &state).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        for written in [&paths.data, &paths.state] {
            assert!(!std::fs::symlink_metadata(written).unwrap().is_symlink());
        }
    }
}
