//! torchvision's `ImageFolder` layout: `DIR/<split>/<class>/<image>`, the classes in
//! sorted order of their folder names (so index k is the k-th name, as torchvision's
//! `find_classes` sorts them), images with the extensions calib decodes. A layout that
//! would train on something else than was meant (no classes, a class without images,
//! train and val with different classes) is an error naming the folder.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The file extensions read as images (compared without case).
pub const EXTENSIONS: [&str; 3] = ["jpeg", "jpg", "png"];

/// One split's files and their class indices, in class order and then file-name order.
#[derive(Clone, Debug)]
pub struct Listing {
    pub classes: Vec<String>,
    pub samples: Vec<(PathBuf, u32)>,
}

/// The class folders of `dir` (one split), sorted.
pub fn list_classes(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory; an image folder data set needs DIR/train/<class>/*.JPEG \
             and DIR/val/<class>/*.JPEG",
            dir.display()
        );
    }
    let mut classes = vec![];
    for entry in read_dir(dir)? {
        if entry.is_dir() {
            let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
            classes.extend(name);
        }
    }
    // Byte order of the names, as Python's sorted() of str for ASCII names.
    classes.sort();
    if classes.is_empty() {
        bail!("{} has no class folders", dir.display());
    }
    Ok(classes)
}

/// Lists `dir` (one split): every class folder and its image files.
pub fn list_split(dir: &Path) -> Result<Listing> {
    let classes = list_classes(dir)?;
    let mut samples = vec![];
    for (k, class) in classes.iter().enumerate() {
        let folder = dir.join(class);
        let mut files: Vec<PathBuf> = read_dir(&folder)?
            .into_iter()
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if files.is_empty() {
            bail!(
                "class folder {} holds no images (*.{})",
                folder.display(),
                EXTENSIONS.join(", *.")
            );
        }
        files.sort();
        samples.extend(files.into_iter().map(|f| (f, k as u32)));
    }
    Ok(Listing { classes, samples })
}

/// Checks that the validation split has the training split's classes, by name.
pub fn check_same_classes(train: (&Path, &Listing), val: (&Path, &Listing)) -> Result<()> {
    if train.1.classes == val.1.classes {
        return Ok(());
    }
    let only_in = |a: &Listing, b: &Listing| -> Vec<String> {
        a.classes
            .iter()
            .filter(|c| !b.classes.contains(c))
            .take(5)
            .cloned()
            .collect()
    };
    bail!(
        "the class folders of {} ({}) and {} ({}) differ: only in the first {:?}, only in \
         the second {:?}",
        train.0.display(),
        train.1.classes.len(),
        val.0.display(),
        val.1.classes.len(),
        only_in(train.1, val.1),
        only_in(val.1, train.1)
    )
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut paths = vec![];
    for entry in entries {
        paths.push(
            entry
                .with_context(|| format!("cannot list {}", dir.display()))?
                .path(),
        );
    }
    Ok(paths)
}
