//! Reading a text table a user hands in, and writing files. Every file the library writes goes
//! through here, so that a reader (a PACS, a browser, a model
//! loader) never sees half of one: the content goes to a temporary file in the same folder, is
//! flushed to the disk, then renamed over the target, which the operating system does in one step.
//! On any failure (a full disk, a read-only folder, an encoder's error) the old file, if any, is left
//! as it was and the temporary is removed; the error carries the operating system's own reason ("No
//! space left on device").
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// The text of a UTF-8 file (a CSV a user hands in): a file that is not UTF-8 is invalid data, named
/// with where its first bad byte is, not a failure to read.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::InvalidData(format!("{}:{line}: not UTF-8 text (byte {at} is not part of a UTF-8 character)", path.display()))
    })
}

/// Writes `bytes` to `path` atomically (see the module documentation).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |temporary| {
        let mut file = std::fs::OpenOptions::new().write(true).open(temporary).map_err(|e| Error::io(path, e))?;
        file.write_all(bytes).map_err(|e| Error::io(path, e))
    })
}

/// Encodes `image` in the format its file name says (PNG, JPEG, ...) and writes it atomically.
pub fn write_image<P>(image: &image::ImageBuffer<P, Vec<P::Subpixel>>, path: &Path) -> Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
{
    let format = image::ImageFormat::from_path(path).map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    let mut encoded = std::io::Cursor::new(Vec::new());
    image.write_to(&mut encoded, format).map_err(|e| Error::InvalidArgument(format!("{}: the image cannot be encoded ({e})", path.display())))?;
    write_atomic(path, encoded.get_ref())
}

/// Writes `path` atomically through `fill`, which writes the whole content to the file it is given
/// (an empty temporary beside `path`), for writers that take a path rather than bytes (libtorch's
/// safetensors writer).
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().ok_or_else(|| Error::InvalidArgument(format!("{:?} names no file to write", path.display().to_string())))?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The mode the target would get from a plain create (0666 less the umask), not the 0600 of a
    // private temporary: the rename keeps the temporary's mode.
    let temporary = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".partial")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(folder)
        .map_err(|e| Error::io(path, e))?;
    fill(temporary.path())?;
    // Reopened by name: a writer given the path may have replaced the file rather than written into it.
    std::fs::File::open(temporary.path()).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, e))?;
    temporary.persist(path).map_err(|e| Error::io(path, e.error))?;
    // The rename itself reaches the disk only with its folder.
    std::fs::File::open(folder).and_then(|f| f.sync_all()).map_err(|e| Error::io(folder, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |temporary| {
            std::fs::write(temporary, b"half").unwrap();
            Err(Error::InvalidData("encoder failed".into()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("encoder failed"));
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn written_files_get_the_usual_mode_not_a_private_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"x").unwrap();
        std::fs::write(dir.path().join("plain.txt"), b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&dir.path().join("plain.txt")));
    }
}
