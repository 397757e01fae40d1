//! Outputs as transactions: nothing ft writes destroys an input or a user's file, and nothing
//! half-written is ever visible under the final name.
//!
//! The rules every writer follows (merge, quantize, export-adapter; training runs and checkpoints):
//! 1. **Never an input.** The output is not one of the command's inputs, does not lie inside one
//!    and does not hold one. Paths are compared after resolving symlinks and `..`; an existing
//!    output is also compared by inode, which catches hard links and bind mounts.
//! 2. **Never a folder ft did not create.** ft's own output folders carry a marker file
//!    ([`MARKER`]). An existing non-empty folder without it is refused, even with `--overwrite`;
//!    one with it is replaced only with `--overwrite`. An existing file is replaced only with
//!    `--overwrite`. A symlink as the final name is refused (say which of the two paths you mean).
//! 3. **Atomic.** A file is written to a temporary sibling, fsynced, renamed over the final name,
//!    and the folder is fsynced. A folder is built complete (marker first) under a temporary
//!    sibling, every file fsynced, then renamed into place in one step — swapped with
//!    `renameat2(RENAME_EXCHANGE)` when it replaces an earlier output — so a crash or `kill -9`
//!    at any point leaves the old output or the new one, never a mix. Temporary names start with
//!    a dot and are never reused, so a killed run never makes ft delete something it did not make.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

/// The file that marks a folder as an ft output (JSON: what wrote it).
pub const MARKER: &str = ".ft-output";

/// What an output path will hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// Check that `out` may be written as `kind` by a command that reads `inputs` (files or
/// folders), replacing an earlier output only when `overwrite`. Call it before the long work.
pub fn check(out: &Path, kind: Kind, inputs: &[&Path], overwrite: bool) -> Result<()> {
    check_not_input(out, inputs)?;
    let shown = out.display();
    let meta = match std::fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(out, e)),
    };
    let refuse = |msg: String| Err(Error::invalid(format!("output {shown}: {msg}")));
    if meta.file_type().is_symlink() {
        return refuse("is a symbolic link; give the path it points to, or a new path".into());
    }
    match (kind, meta.is_dir()) {
        (Kind::File, true) => refuse("is a folder, and this output is a file".into()),
        (Kind::Dir, false) => refuse("is a file, and this output is a folder".into()),
        (Kind::File, false) if overwrite => Ok(()),
        (Kind::File, false) => refuse("already exists; pass --overwrite to replace it".into()),
        (Kind::Dir, true) => {
            if is_empty_dir(out)? {
                Ok(())
            } else if !is_ft_dir(out) {
                refuse(format!(
                    "is a folder ft did not create (it has no {MARKER}); ft never replaces or writes \
                     into it, even with --overwrite: choose a new path"
                ))
            } else if overwrite {
                Ok(())
            } else {
                refuse("holds an earlier ft output; pass --overwrite to replace it".into())
            }
        }
    }
}

/// Refuse an output that is one of `inputs`, lies inside one, or holds one.
pub fn check_not_input(out: &Path, inputs: &[&Path]) -> Result<()> {
    let out_r = resolve(out)?;
    for input in inputs {
        let in_r = resolve(input)?;
        let (o, i) = (out.display(), input.display());
        if out_r == in_r || same_inode(out, input) {
            return Err(Error::invalid(format!(
                "output {o} is the input {i}; write to another path"
            )));
        }
        if out_r.starts_with(&in_r) {
            return Err(Error::invalid(format!(
                "output {o} lies inside the input {i}; write outside it"
            )));
        }
        if in_r.starts_with(&out_r) {
            return Err(Error::invalid(format!(
                "output {o} holds the input {i}; write to another path"
            )));
        }
    }
    Ok(())
}

/// An absolute path with symlinks and `..` resolved: the existing prefix canonicalized, the
/// rest (which cannot contain symlinks, since it does not exist) resolved lexically.
pub fn resolve(p: &Path) -> Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io(".", e))?
            .join(p)
    };
    let comps: Vec<Component<'_>> = abs.components().collect();
    // The longest prefix that exists.
    let mut k = comps.len();
    let mut base = loop {
        let prefix: PathBuf = comps[..k].iter().collect();
        if k == 0 {
            break PathBuf::from("/");
        }
        if let Ok(c) = prefix.canonicalize() {
            break c;
        }
        k -= 1;
    };
    for c in &comps[k..] {
        match c {
            Component::ParentDir => {
                base.pop();
            }
            Component::Normal(n) => base.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(base)
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    let mut it = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(it.next().is_none())
}

/// Whether `dir` is a folder ft created (it holds the [`MARKER`] file).
pub fn is_ft_dir(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(MARKER)).is_ok_and(|m| m.is_file())
}

/// The folder `path` sits in (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A hidden sibling name for work in progress: `.NAME.ft-tmp-PID-RANDOM`.
fn temp_sibling(path: &Path, tag: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::invalid(format!("{} does not name a file", path.display())))?;
    Ok(parent_of(path).join(format!(
        ".{name}.ft-{tag}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )))
}

/// Remove what killed ft processes left beside `path`: its temporary siblings
/// (`.NAME.ft-tmp-PID-*`, `.NAME.ft-old-PID-*`) whose process no longer runs. A folder goes
/// only when it carries the [`MARKER`] (or is empty); nothing else is touched.
fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent_of(path)) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = [".ft-tmp-", ".ft-old-"]
            .iter()
            .find_map(|tag| file.strip_prefix(&format!(".{name}{tag}")))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_file() => {
                let _ = std::fs::remove_file(&p);
            }
            Ok(t) if t.is_dir() => {
                let _ = if is_ft_dir(&p) {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_dir(&p)
                };
            }
            _ => {}
        }
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_alive(_: u32) -> bool {
    true
}

/// fsync a folder, so the renames and new entries in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// [`write_file`] for bytes already in memory.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file(path, |f| f.write_all(bytes))
}

/// Write `path` atomically: a new temporary sibling, fsync, rename over `path`, fsync the
/// folder. On any error the temporary file is removed and `path` is untouched.
pub fn write_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let dir = parent_of(path);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    remove_stale_temps(path);
    let (tmp, file) = create_new_sibling(path)?;
    let result = (|| {
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    sync_dir(&dir)
}

fn create_new_sibling(path: &Path) -> Result<(PathBuf, File)> {
    loop {
        let tmp = temp_sibling(path, "tmp")?;
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&tmp, e)),
        }
    }
}

/// Create the folder `path` with its [`MARKER`] (what = what it holds), fsynced. It must not
/// exist yet. For outputs filled over time (a training run); one-shot folders use [`write_dir`].
pub fn create_marked_dir(path: &Path, what: &str) -> Result<()> {
    let parent = parent_of(path);
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    std::fs::create_dir(path).map_err(|e| Error::io(path, e))?;
    write_marker(path, what)?;
    sync_dir(path)?;
    sync_dir(&parent)
}

fn write_marker(dir: &Path, what: &str) -> Result<()> {
    let text = serde_json::json!({
        "written_by": format!("ft {}", env!("CARGO_PKG_VERSION")),
        "holds": what,
    })
    .to_string();
    let p = dir.join(MARKER);
    std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
}

/// Build the folder `path` atomically: `fill` writes into a fresh temporary sibling (which
/// already holds the [`MARKER`] saying `what`), every file is fsynced, then the folder takes
/// the final name in one rename. `path` must be absent, an empty folder, or an earlier ft
/// output (the caller decided with [`check`] whether replacing it is allowed); anything else
/// is refused here too. On error the temporary folder is removed and `path` is untouched.
pub fn write_dir<T>(path: &Path, what: &str, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let parent = parent_of(path);
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    remove_stale_temps(path);
    let replace = match std::fs::symlink_metadata(path) {
        Err(_) => false,
        Ok(m) if m.is_dir() && !m.file_type().is_symlink() => {
            if is_empty_dir(path)? {
                false
            } else if is_ft_dir(path) {
                true
            } else {
                return Err(Error::invalid(format!(
                    "output {}: a folder ft did not create appeared there; not replacing it",
                    path.display()
                )));
            }
        }
        Ok(_) => {
            return Err(Error::invalid(format!(
                "output {}: is not a folder ft can replace",
                path.display()
            )))
        }
    };
    let tmp = loop {
        let t = temp_sibling(path, "tmp")?;
        match std::fs::create_dir(&t) {
            Ok(()) => break t,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&t, e)),
        }
    };
    let result = write_marker(&tmp, what)
        .and_then(|()| fill(&tmp))
        .and_then(|v| {
            sync_tree(&tmp)?;
            Ok(v)
        })
        .and_then(|v| {
            if replace {
                swap_in(&tmp, path)?;
            } else {
                std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
            }
            sync_dir(&parent)?;
            Ok(v)
        });
    // After a swap `tmp` holds the earlier output (ft's own); after a failure, the partial one.
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// fsync every file under `dir`, then the folders themselves.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let p = entry.path();
        let ty = entry.file_type().map_err(|e| Error::io(&p, e))?;
        if ty.is_dir() {
            sync_tree(&p)?;
        } else if ty.is_file() {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&p, e))?;
        }
    }
    sync_dir(dir)
}

/// Put the complete folder `new` at `path`, which holds an earlier ft output; afterwards `new`
/// names the earlier output. One atomic exchange where the OS has it; otherwise two renames,
/// with the earlier output kept under `new`'s name in between (never lost, never mixed).
fn swap_in(new: &Path, path: &Path) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
        if let (Some(a), Some(b)) = (c(new), c(path)) {
            // SAFETY: two valid NUL-terminated paths; renameat2 reads them and nothing else.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            // Filesystems without RENAME_EXCHANGE say EINVAL; fall back to two renames.
            if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
                return Err(Error::io(path, e));
            }
        }
    }
    let old = temp_sibling(path, "old")?;
    std::fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
    if let Err(e) = std::fs::rename(new, path) {
        let _ = std::fs::rename(&old, path);
        return Err(Error::io(path, e));
    }
    std::fs::rename(&old, new).map_err(|e| Error::io(&old, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn outputs_that_are_inside_or_hold_an_input_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let ad = d.path().join("runs/x");
        std::fs::create_dir_all(&ad).unwrap();
        std::fs::write(ad.join("adapter_model.safetensors"), b"w").unwrap();
        let base = d.path().join("base.gguf");
        std::fs::write(&base, b"m").unwrap();
        let inputs = [ad.as_path(), base.as_path()];
        let chk = |out: &Path| check(out, Kind::Dir, &inputs, true);
        assert!(err(chk(&ad)).contains("is the input"));
        assert!(err(chk(&d.path().join("runs/x/merged"))).contains("inside the input"));
        assert!(err(chk(&d.path().join("runs"))).contains("holds the input"));
        // `..` and symlinks are resolved before comparing.
        assert!(err(chk(&d.path().join("runs/y/../x"))).contains("is the input"));
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&ad, &link).unwrap();
        assert!(err(chk(&link.join("out"))).contains("inside the input"));
        let f = |out: &Path| check(out, Kind::File, &inputs, true);
        assert!(err(f(&ad.join("adapter_model.safetensors"))).contains("inside the input"));
        assert!(err(f(&base)).contains("is the input"));
        let hard = d.path().join("hard.gguf");
        std::fs::hard_link(&base, &hard).unwrap();
        assert!(err(f(&hard)).contains("is the input"));
        let sym = d.path().join("sym.gguf");
        std::os::unix::fs::symlink(&base, &sym).unwrap();
        assert!(err(f(&sym)).contains("is the input"));
        assert!(f(&d.path().join("new/out.gguf")).is_ok());
    }

    #[test]
    fn only_ft_folders_are_replaced_and_only_with_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let user = d.path().join("mine");
        std::fs::create_dir(&user).unwrap();
        std::fs::write(user.join("notes.txt"), b"keep").unwrap();
        for ow in [false, true] {
            assert!(err(check(&user, Kind::Dir, &[], ow)).contains("did not create"));
        }
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        check(&empty, Kind::Dir, &[], false).unwrap();
        let out = d.path().join("out");
        write_dir(&out, "test", |p| {
            std::fs::write(p.join("a"), b"1").map_err(|e| Error::io(p, e))
        })
        .unwrap();
        assert!(is_ft_dir(&out));
        assert!(err(check(&out, Kind::Dir, &[], false)).contains("--overwrite"));
        check(&out, Kind::Dir, &[], true).unwrap();
        write_dir(&out, "test", |p| {
            std::fs::write(p.join("b"), b"2").map_err(|e| Error::io(p, e))
        })
        .unwrap();
        assert!(!out.join("a").exists() && out.join("b").exists());
        // write_dir itself never replaces a foreign folder, whatever the caller checked.
        assert!(write_dir(&user, "test", |_| Ok(())).is_err());
        assert_eq!(std::fs::read(user.join("notes.txt")).unwrap(), b"keep");
        // Files: replaced only with --overwrite; a file is not a folder and vice versa.
        let f = d.path().join("f.gguf");
        std::fs::write(&f, b"x").unwrap();
        assert!(err(check(&f, Kind::File, &[], false)).contains("--overwrite"));
        check(&f, Kind::File, &[], true).unwrap();
        assert!(err(check(&f, Kind::Dir, &[], true)).contains("is a file"));
        assert!(err(check(&out, Kind::File, &[], true)).contains("is a folder"));
        // Nothing but the outputs is left behind: no temporary siblings.
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["empty", "f.gguf", "mine", "out"]);
    }

    #[test]
    fn a_failed_fill_leaves_the_earlier_output() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        write_dir(&out, "test", |p| {
            std::fs::write(p.join("a"), b"1").map_err(|e| Error::io(p, e))
        })
        .unwrap();
        let e = write_dir(&out, "test", |p| -> Result<()> {
            std::fs::write(p.join("b"), b"2").map_err(|e| Error::io(p, e))?;
            Err(Error::invalid("boom"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(out.join("a")).unwrap(), b"1");
        assert!(!out.join("b").exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        let f = d.path().join("f");
        write_file(&f, |w| w.write_all(b"old")).unwrap();
        assert!(write_file(&f, |_| Err(std::io::Error::other("no"))).is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }
}
