//! A YAML stream cut into its documents, and a `List`'s items located in
//! their document, so problems can name file lines.
//!
//! Each document is parsed on its own, so one broken document does not hide
//! the others (a stream parser stops at the first error).

/// One document of a stream: its text and the file line it starts on.
pub(super) struct Chunk<'a> {
    pub(super) text: &'a str,
    pub(super) first_line: usize,
}

/// Splits a YAML stream at `---` lines and after `...` lines. Directives
/// (`%YAML`, `%TAG`) stay with the document they introduce; documents that
/// hold only comments or blanks are dropped.
pub(super) fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (line_no, line) in (1usize..).zip(text.split_inclusive('\n')) {
        let bare = line.trim_end_matches(['\n', '\r']);
        let starts_document =
            bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        // Directives without content so far introduce this document.
        if starts_document && offset > start && !only_directives(&text[start..offset]) {
            chunks.push(Chunk {
                text: &text[start..offset],
                first_line: start_line,
            });
            start = offset;
            start_line = line_no;
        }
        offset += line.len();
        // `...` ends a document; a directive for the next one may follow.
        if bare == "..." || bare.starts_with("... ") {
            chunks.push(Chunk {
                text: &text[start..offset],
                first_line: start_line,
            });
            start = offset;
            start_line = line_no + 1;
        }
    }
    if offset > start {
        chunks.push(Chunk {
            text: &text[start..offset],
            first_line: start_line,
        });
    }
    chunks.retain(|c| has_content(c.text));
    chunks
}

/// Neither blank, a comment, a marker nor a directive.
fn is_content(line: &str) -> bool {
    let t = line.trim();
    !(t.is_empty() || t.starts_with('#') || t == "---" || t == "..." || line.starts_with('%'))
}

fn has_content(text: &str) -> bool {
    text.lines().any(is_content)
}

fn only_directives(text: &str) -> bool {
    !has_content(text) && text.lines().any(|line| line.starts_with('%'))
}

/// File line of the first content line of a document.
pub(super) fn first_content_line(text: &str, first_line: usize) -> usize {
    text.lines()
        .position(is_content)
        .map_or(first_line, |offset| first_line + offset)
}

/// One item of a block sequence: the line (0-based, in the document) its
/// `-` is on, and its text with the `- ` and indentation removed, as if it
/// were a document of its own.
pub(super) struct Item {
    pub(super) line: usize,
    pub(super) text: String,
}

/// The items of the top-level `items:` block sequence, in order. Empty when
/// the list is written in flow style (`items: [...]`) or cannot be followed:
/// callers then fall back to the line of `items:` itself.
pub(super) fn list_items(text: &str) -> Vec<Item> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(key) = lines.iter().position(|l| {
        l.strip_prefix("items:")
            .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#'))
    }) else {
        return Vec::new();
    };
    let mut starts: Vec<(usize, usize)> = Vec::new();
    let mut indent: Option<usize> = None;
    let mut end = lines.len();
    for (i, line) in lines.iter().enumerate().skip(key + 1) {
        if !is_content(line) {
            continue;
        }
        let this = line.len() - line.trim_start_matches(' ').len();
        let dash = line[this..].starts_with('-')
            && line[this + 1..].chars().next().is_none_or(|c| c == ' ');
        match indent {
            None if dash => indent = Some(this),
            None => return Vec::new(),
            Some(at) if this == at && dash => {}
            Some(at) if this > at => continue,
            Some(_) => {
                end = i;
                break;
            }
        }
        // The item's content starts after the dash and its spaces.
        let content = this + 1 + line[this + 1..].len() - line[this + 1..].trim_start().len();
        starts.push((i, content));
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &(line, column))| {
            let stop = starts.get(n + 1).map_or(end, |&(next, _)| next);
            Item {
                line,
                text: dedent(&lines[line..stop], column),
            }
        })
        .collect()
}

/// The lines of one item, its first line's dash and everything left of the
/// content column removed. A line indented less (which YAML would reject)
/// is kept as it is, so the parser reports it.
fn dedent(lines: &[&str], column: usize) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let cut = if i == 0 {
            line.get(column..)
        } else {
            line.get(column..)
                .filter(|_| line.chars().take(column).all(|c| c == ' '))
        };
        out.push_str(cut.unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<(usize, String)> {
        split_documents(text)
            .into_iter()
            .map(|c| (c.first_line, c.text.to_owned()))
            .collect()
    }

    #[test]
    fn directives_stay_with_their_document() {
        let stream =
            "%YAML 1.2\n---\na: 1\n...\n%YAML 1.2\n%TAG ! tag:example.com,2000:\n---\nb: 2\n";
        assert_eq!(
            texts(stream),
            vec![
                (1, "%YAML 1.2\n---\na: 1\n...\n".to_owned()),
                (
                    5,
                    "%YAML 1.2\n%TAG ! tag:example.com,2000:\n---\nb: 2\n".to_owned()
                )
            ]
        );
    }

    #[test]
    fn markers_comments_and_blanks_alone_are_no_document() {
        assert_eq!(
            texts("# c\n---\n---\n\na: 1\n---\n# only a comment\n"),
            vec![(3, "---\n\na: 1\n".to_owned())]
        );
    }

    #[test]
    fn list_items_are_located_and_dedented() {
        let doc = "kind: List\nitems:\n  - kind: Pod\n    metadata: {name: a}\n\n  -   kind: Service\n      spec:\n        x: 1\nother: 2\n";
        let items = list_items(doc);
        let found: Vec<(usize, &str)> = items.iter().map(|i| (i.line, i.text.as_str())).collect();
        assert_eq!(
            found,
            vec![
                (2, "kind: Pod\nmetadata: {name: a}\n\n"),
                (5, "kind: Service\nspec:\n  x: 1\n"),
            ]
        );
    }

    #[test]
    fn flow_lists_and_odd_text_are_not_followed() {
        assert!(list_items("items: [{kind: Pod}]\n").is_empty());
        assert!(list_items("items:\n  kind: Pod\n").is_empty());
        assert!(list_items("kind: List\n").is_empty());
        // Multi-byte text must not split a character.
        assert_eq!(list_items("items:\n- é\n-\n").len(), 2);
    }
}
