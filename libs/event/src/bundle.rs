//! Several JSON documents in one stream entry: how the raw stream carries
//! events (and how JSON records were carried on the enriched stream).

/// The documents of a bundled payload: JSON documents separated by `\n`
/// (compact JSON never holds a raw newline: inside strings it is escaped),
/// so one `XADD` and one acknowledgement serve many events.
pub fn bundle_documents(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
}

#[cfg(test)]
mod tests {
    use super::bundle_documents;

    #[test]
    fn bundles_split_into_their_documents() {
        // A newline inside a value is escaped by the encoder, so it cannot
        // split a document.
        let docs = [
            serde_json::json!({"name": "a\nb", "n": 1}),
            serde_json::json!({"name": "c"}),
        ];
        let bundle = docs
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let back: Vec<serde_json::Value> = bundle_documents(bundle.as_bytes())
            .map(|d| serde_json::from_slice(d).unwrap())
            .collect();
        assert_eq!(back, docs);
        // One document without a separator is a bundle of one; stray blank
        // lines are not documents.
        assert_eq!(bundle_documents(br#"{"a":1}"#).count(), 1);
        assert_eq!(bundle_documents(b"{}\n\n \n{}\n").count(), 2);
    }
}
