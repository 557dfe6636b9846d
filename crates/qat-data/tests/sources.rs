//! Source formats and their errors.

mod common;

use common::docs;
use qat_data::source::Document;
use qat_data::{Format, SourceConfig, Split};

fn cfg(path: &std::path::Path, format: Format) -> SourceConfig {
    toml::from_str::<SourceConfig>(&format!("path = {:?}\nformat = {:?}\ncategory = \"x\"", path, format!("{format:?}").to_lowercase())).unwrap()
}

#[test]
fn formats_yield_documents() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.txt");
    std::fs::write(&p, "a b\nc\n\n\nd e\n").unwrap();
    assert_eq!(docs(&cfg(&p, Format::Text)).unwrap(), vec![Document::Text("a b\nc".into()), Document::Text("d e".into())]);
    let mut c = cfg(&p, Format::Text);
    c.split = Split::Line;
    assert_eq!(docs(&c).unwrap().len(), 3);
    c.split = Split::None;
    assert_eq!(docs(&c).unwrap(), vec![Document::Text("a b\nc\n\n\nd e\n".into())]);

    let p = dir.path().join("qa.jsonl");
    std::fs::write(&p, "{\"question\": \"1+1?\", \"answer\": \"2\"}\n").unwrap();
    match &docs(&cfg(&p, Format::Qa)).unwrap()[0] {
        Document::Chat(m) => assert_eq!((m[0].role.as_str(), m[1].content.as_str()), ("user", "2")),
        other => panic!("{other:?}"),
    }
    let p = dir.path().join("sg.json");
    std::fs::write(&p, r#"[{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]"#).unwrap();
    match &docs(&cfg(&p, Format::Chat)).unwrap()[0] {
        Document::Chat(m) => assert_eq!(m[1].role, "assistant"),
        other => panic!("{other:?}"),
    }
    let p = dir.path().join("al.json");
    std::fs::write(&p, r#"[{"instruction": "Add", "input": "1 and 2", "output": "3"}]"#).unwrap();
    match &docs(&cfg(&p, Format::Alpaca)).unwrap()[0] {
        Document::Chat(m) => assert_eq!(m[0].content, "Add\n\n1 and 2"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_sources_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(&p, "{\"text\": \"ok\"}\n{\"text\": 3}\n").unwrap();
    let e = docs(&cfg(&p, Format::Jsonl)).unwrap_err();
    assert!(e.contains("bad.jsonl:2") && e.contains("`text`"), "{e}");
    std::fs::write(&p, "{\"text\": \"ok\"}\nnot json\n").unwrap();
    let e = docs(&cfg(&p, Format::Jsonl)).unwrap_err();
    assert!(e.contains("bad.jsonl:2") && e.contains("invalid JSON"), "{e}");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let e = docs(&cfg(&empty, Format::Text)).unwrap_err();
    assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
    let e = docs(&cfg(&dir.path().join("nope.txt"), Format::Text)).unwrap_err();
    assert!(e.contains("nope.txt"), "{e}");
    let e = toml::from_str::<SourceConfig>("path = \"x\"\nformat = \"parquet\"\ncategory = \"c\"").unwrap_err().to_string();
    assert!(e.contains("parquet"), "{e}");
}
