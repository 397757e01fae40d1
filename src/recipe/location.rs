//! Where a recipe key was written, so every error can say `recipes/x.yaml:12:5` or
//! `--set lora.r=0`. serde's YAML `Value` keeps no positions, so block-style YAML is indexed
//! by indentation; keys inside flow mappings (`lora: {r: 8}`) resolve to their section's line.

use super::schema::SetFlag;

/// Line and column (1-based) of each block-style key, by dotted path.
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    keys: Vec<(String, usize, usize)>,
}

impl KeyIndex {
    pub fn build(text: &str) -> KeyIndex {
        let mut keys = Vec::new();
        let mut stack: Vec<(usize, String)> = Vec::new();
        // Inside a block scalar (`key: |`): skip lines indented past the key.
        let mut block_scalar: Option<usize> = None;
        for (i, line) in text.lines().enumerate() {
            let body = line.trim_start();
            let indent = line.len() - body.len();
            if let Some(at) = block_scalar {
                if body.is_empty() || indent > at {
                    continue;
                }
                block_scalar = None;
            }
            if body.is_empty()
                || body.starts_with('#')
                || body.starts_with("---")
                || body.starts_with('-')
            {
                continue;
            }
            let Some((key, rest)) = split_key(body) else {
                continue;
            };
            while stack.last().is_some_and(|(ind, _)| *ind >= indent) {
                stack.pop();
            }
            let mut path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            path.push(&key);
            keys.push((path.join("."), i + 1, indent + 1));
            let rest = strip_comment(rest).trim();
            if rest.starts_with('|') || rest.starts_with('>') {
                block_scalar = Some(indent);
            }
            stack.push((indent, key));
        }
        KeyIndex { keys }
    }

    /// Position of `path`, or of its nearest written ancestor; list indices (`[2]`) ignored.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let clean = strip_indices(path);
        let mut parts: Vec<&str> = clean.split('.').filter(|p| !p.is_empty()).collect();
        while !parts.is_empty() {
            let want = parts.join(".");
            if let Some((_, l, c)) = self.keys.iter().find(|(k, _, _)| *k == want) {
                return Some((*l, *c));
            }
            parts.pop();
        }
        None
    }

    /// Whether `path` itself (not an ancestor) was written in the file.
    fn has(&self, path: &str) -> bool {
        let clean = strip_indices(path);
        self.keys.iter().any(|(k, _, _)| *k == clean)
    }
}

fn strip_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0;
    for ch in path.chars() {
        match ch {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    out
}

/// `key: rest` -> (key, rest); quoted keys unquoted. None for lines that are not `key:`.
fn split_key(body: &str) -> Option<(String, &str)> {
    if let Some(q) = body.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = body[1..].find(q)? + 1;
        let after = body[end + 1..].trim_start();
        let rest = after.strip_prefix(':')?;
        return Some((body[1..end].to_string(), rest));
    }
    if body.starts_with(['{', '[', '&', '*', '!', '|', '>']) {
        return None;
    }
    let colon = body
        .match_indices(':')
        .map(|(i, _)| i)
        .find(|&i| body[i + 1..].is_empty() || body[i + 1..].starts_with([' ', '\t']))?;
    let key = body[..colon].trim();
    (!key.is_empty() && !key.contains(" #")).then(|| (key.to_string(), &body[colon + 1..]))
}

fn strip_comment(s: &str) -> &str {
    match s.find(" #") {
        Some(i) => &s[..i],
        None => s,
    }
}

/// Turns a key path into the place to point the user at.
#[derive(Debug)]
pub(crate) struct Locator {
    pub origin: String,
    pub index: KeyIndex,
    pub sets: Vec<SetFlag>,
}

impl Locator {
    /// `origin:line:col`, or `--set k=v` when that flag wrote the key (or a section above it).
    pub fn at(&self, path: &str) -> String {
        let clean = strip_indices(path);
        let covers = |d: &str, p: &str| p == d || p.starts_with(&format!("{d}."));
        if let Some(s) = self.sets.iter().rev().find(|s| covers(&s.dotted(), &clean)) {
            return format!("--set {}", s.raw);
        }
        // A section the file lacks but a flag introduced (a key missing under it).
        if !clean.is_empty() && !self.index.has(&clean) {
            if let Some(s) = self.sets.iter().rev().find(|s| covers(&clean, &s.dotted())) {
                return format!("--set {}", s.raw);
            }
        }
        self.at_file(&clean)
    }

    /// `origin:line:col` of the key (or nearest ancestor) in the file; 1:1 when absent.
    pub fn at_file(&self, path: &str) -> String {
        let (l, c) = self.index.find(path).unwrap_or((1, 1));
        format!("{}:{l}:{c}", self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_keys() {
        let text = "# comment\nmodel:\n  path: m.gguf # c\n  chat_template: |\n    a: b\n    {{ x }}\n  device: cpu\ndataset:\n  train:\n    - a.jsonl\n  \"format\": chat\nlora: {r: 8}\n";
        let ix = KeyIndex::build(text);
        assert_eq!(ix.find("model.path"), Some((3, 3)));
        assert_eq!(ix.find("model.device"), Some((7, 3)));
        assert_eq!(
            ix.find("model.a"),
            Some((2, 1)),
            "block scalar body is not a key"
        );
        assert_eq!(ix.find("dataset.format"), Some((11, 3)));
        assert_eq!(
            ix.find("lora.r"),
            Some((12, 1)),
            "flow mapping: the section"
        );
        assert_eq!(ix.find("dataset.train[0]"), Some((9, 3)));
        assert_eq!(ix.find("nothing"), None);
    }
}
