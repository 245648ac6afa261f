use super::*;

fn one(src: &str) -> Value {
    let doc = load(&format!("k: {src}\n")).unwrap().unwrap();
    doc.get("k").unwrap().value.clone()
}

#[test]
fn yaml11_scalars() {
    for (src, want) in [
        ("yes", Value::Bool(true)),
        ("No", Value::Bool(false)),
        ("ON", Value::Bool(true)),
        ("off", Value::Bool(false)),
        ("y", Value::Str("y".into())),
        ("n", Value::Str("n".into())),
        ("yEs", Value::Str("yEs".into())),
        ("0644", Value::Int(420)),
        ("0", Value::Int(0)),
        ("-0", Value::Int(0)),
        ("0x1F", Value::Int(31)),
        ("0b101", Value::Int(5)),
        ("1_000", Value::Int(1000)),
        ("12:30", Value::Int(750)),
        ("-42", Value::Int(-42)),
        ("+7", Value::Int(7)),
        ("09", Value::Str("09".into())),
        ("1.5", Value::Float(1.5)),
        ("1.", Value::Float(1.0)),
        (".5", Value::Float(0.5)),
        ("1.0e+3", Value::Float(1000.0)),
        ("1e3", Value::Str("1e3".into())),
        ("1.0e3", Value::Str("1.0e3".into())),
        ("1:30.5", Value::Float(90.5)),
        ("~", Value::Null),
        ("null", Value::Null),
        ("", Value::Null),
        ("2017-03-01", Value::Timestamp("2017-03-01".into())),
        ("2017-02-30", Value::Str("2017-02-30".into())),
        (
            "2001-12-14t21:59:43.10-05:00",
            Value::Timestamp("2001-12-14 21:59:43.100000-05:00".into()),
        ),
        (
            "2001-12-14 21:59:43.10 Z",
            Value::Timestamp("2001-12-14 21:59:43.100000+00:00".into()),
        ),
        ("'0644'", Value::Str("0644".into())),
        ("\"yes\"", Value::Str("yes".into())),
        ("!!str 12", Value::Str("12".into())),
        ("!!int \"12\"", Value::Int(12)),
        ("1.2.3", Value::Str("1.2.3".into())),
        ("12:60", Value::Str("12:60".into())),
        ("06:30:00", Value::Str("06:30:00".into())),
    ] {
        assert_eq!(one(src), want, "{src}");
    }
    assert!(matches!(one(".inf"), Value::Float(f) if f.is_infinite()));
}

#[test]
fn python_float_repr_matches_python() {
    for (f, want) in [
        (1.5, "1.5"),
        (0.0, "0.0"),
        (1000.0, "1000.0"),
        (1e16, "1e+16"),
        (1.5e16, "1.5e+16"),
        (123456789012345.0, "123456789012345.0"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5e-7, "-2.5e-07"),
        (0.1, "0.1"),
        (1e100, "1e+100"),
        (90.5, "90.5"),
    ] {
        assert_eq!(python_float_repr(f), want, "{f}");
    }
}

#[test]
fn positions_are_one_based() {
    let doc = load("a:\n  b: 1\n").unwrap().unwrap();
    let b = doc.get("a").unwrap().get("b").unwrap();
    assert_eq!(b.pos, Pos { line: 2, col: 6 });
}

#[test]
fn merge_keys_and_aliases() {
    let doc = load("base: &b {x: 1, y: 2}\nother: &o {z: 3}\nm:\n  <<: [*b, *o]\n  y: 9\nr: *b\n")
        .unwrap()
        .unwrap();
    let m = doc.get("m").unwrap();
    assert_eq!(m.get("x").unwrap().value, Value::Int(1));
    assert_eq!(m.get("y").unwrap().value, Value::Int(9));
    assert_eq!(m.get("z").unwrap().value, Value::Int(3));
    assert_eq!(doc.get("r").unwrap().get("y").unwrap().value, Value::Int(2));
}

#[test]
fn alias_bomb_fails_fast() {
    let mut src = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        src.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let t = std::time::Instant::now();
    let e = load(&src).unwrap_err();
    assert!(e.message.contains("alias bomb"), "{e}");
    assert!(t.elapsed().as_secs() < 2);
}

#[test]
fn string_alias_bomb_counts_bytes() {
    let src = format!(
        "big: &b \"{}\"\nl: [{}]\n",
        "x".repeat(1 << 20),
        vec!["*b"; 100].join(", ")
    );
    let e = load(&src).unwrap_err();
    assert!(e.message.contains("MiB of text"), "{e}");
    assert_eq!(e.path, "l[14]");
    assert_eq!(e.pos.map(|p| p.line), Some(2));
    // Sixteen copies fit.
    let ok = src.replace(&vec!["*b"; 100].join(", "), &vec!["*b"; 14].join(", "));
    load(&ok).unwrap();
}

#[test]
fn problems_below_a_secret_name_only_the_secret() {
    let secret: SecretRoot = &|p: &str| p.strip_prefix("s").map(|_| &p[..1]);
    let e = load_with("s: {k9: 1, k9: 2}\n", secret).unwrap_err();
    assert_eq!(e.path, "s");
    assert!(!e.to_string().contains("k9"), "{e}");
    let e = load_with("s: !k9 x\n", secret).unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.to_string().contains("k9")),
        ("s", false)
    );
    let e = load_with("s: [{!k9 a: 1}]\n", secret).unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.to_string().contains("k9")),
        ("s", false)
    );
    // Outside the secret, names are shown (escaped).
    let e = load_with("t: {\"k\\e\": 1, \"k\\e\": 2}\n", secret).unwrap_err();
    assert_eq!(e.path, "t.k\\u{1b}");
    assert!(e.message.contains("duplicate key `k\\u{1b}`"), "{e}");
    let e = load_with("t: !k9 x\n", secret).unwrap_err();
    assert!(e.message.contains("`!k9`"), "{e}");
    assert_eq!(printable(&"k".repeat(100)).chars().count(), 65);
}

#[test]
fn depth_limit() {
    let src = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
    let e = load(&src).unwrap_err();
    assert!(e.message.contains("nested too deeply"), "{e}");
}

#[test]
fn malformed_has_line() {
    let e = load("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
    assert!(e.pos.is_some());
    assert!(e.message.starts_with("malformed YAML"), "{e}");
}

#[test]
fn duplicate_keys_refused() {
    let e = load("a: 1\nb: 2\na: 3\n").unwrap_err();
    assert_eq!(e.to_string(), "3:1: duplicate key `a` (first at line 1)");
    assert_eq!(e.path, "a");
    let e = load("a: [{b: 1, b: 2}]\n").unwrap_err();
    assert_eq!(e.path, "a[0].b");
}

#[test]
fn empty_and_comments_only() {
    assert_eq!(load("").unwrap(), None);
    assert_eq!(load("#cloud-config\n# nothing\n").unwrap(), None);
}

#[test]
fn unknown_tags_refused() {
    let e = load("a: !python/object x\n").unwrap_err();
    assert!(e.message.contains("unsupported tag"), "{e}");
}

#[test]
fn decode_rejects_bad_utf8_and_size() {
    assert!(decode(b"a: \xff\n")
        .unwrap_err()
        .message
        .contains("not UTF-8"));
    assert!(decode(&vec![b' '; MAX_BYTES + 1])
        .unwrap_err()
        .message
        .contains("too large"));
    assert_eq!(decode(b"\xEF\xBB\xBFa: 1").unwrap(), "a: 1");
}
