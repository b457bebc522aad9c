//! Each crate's root documentation has a `# Layout` section naming every
//! module the crate declares, so that a reader can find where anything
//! lives and the section cannot go stale unnoticed.

use std::path::Path;

/// The modules a crate root declares (`mod x;`, `pub mod x;`,
/// `pub(crate) mod x;`), leaving out inline test modules.
fn declared(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .or_else(|| line.strip_prefix("mod "))?;
            let name = rest.strip_suffix(';')?;
            Some(name.trim().to_string())
        })
        .collect()
}

/// The crate documentation's `# Layout` section.
fn layout(source: &str) -> Option<String> {
    let doc: Vec<&str> = source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!"))
        .collect();
    let start = doc.iter().position(|l| l.trim() == "# Layout")?;
    let section: Vec<&str> = doc[start + 1..]
        .iter()
        .take_while(|l| !l.trim_start().starts_with('#'))
        .copied()
        .collect();
    Some(section.join("\n"))
}

#[test]
fn every_crate_names_each_of_its_modules_in_its_layout_section() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let lib = dir.join("src/lib.rs");
        let main = dir.join("src/main.rs");
        let file = if lib.exists() { lib } else { main };
        let Ok(source) = std::fs::read_to_string(&file) else {
            continue;
        };
        let modules = declared(&source);
        if modules.is_empty() {
            continue;
        }
        let section =
            layout(&source).unwrap_or_else(|| panic!("{} has no # Layout section", file.display()));
        for m in modules {
            assert!(
                section.contains(&format!("`{m}`")),
                "{}: module {m} is not named in # Layout",
                file.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} crates checked");
}
