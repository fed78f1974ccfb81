//! The small languages of `rosterctl kv txn`:
//!
//! * compares (`--if`): `TARGET(KEY) OP OPERAND`, e.g. `mod(config) = 42`,
//!   `version(lock) > 0`, `create(lock) = 0`, `value(mode) != active`.
//!   Targets: `mod` (`mod_revision`), `create` (`create_revision`),
//!   `version`, `value`. Operators: `=` (or `==`), `!=`, `>`, `<`.
//! * operations (`--then`, `--else`): `put KEY VALUE`, `get KEY [--prefix]`,
//!   `del KEY [--prefix]`.
//!
//! Keys and values may be quoted with `"` or `'` to include spaces,
//! parentheses or arbitrary bytes; inside quotes `\\`, `\"`, `\'`, `\n`,
//! `\t`, `\r`, `\0` and `\xHH` are escapes. The unquoted operand of a
//! `value(...)` compare is the rest of the expression, trimmed.

use roster_client::prelude::*;
use roster_client::proto::{DeleteRequest, RangeRequest};

/// Parses one `--if` compare.
pub fn parse_compare(input: &str) -> Result<Compare, String> {
    let mut p = Cursor::new(input);
    p.skip_ws();
    let name = p.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
    if name.is_empty() {
        return Err(format!("expected a compare like 'mod(KEY) = 5', got {input:?}"));
    }
    let target = match name.to_ascii_lowercase().as_str() {
        "mod" | "mod_revision" | "modrev" | "mod_rev" => Target::Mod,
        "create" | "create_revision" | "createrev" | "create_rev" => Target::Create,
        "version" | "ver" => Target::Version,
        "value" | "val" => Target::Value,
        _ => {
            return Err(format!(
                "unknown compare target {name:?} (expected mod, create, version or value)"
            ))
        }
    };
    p.skip_ws();
    if !p.eat('(') {
        return Err(format!("expected '(' after {name:?} (write {name}(KEY) ...)"));
    }
    p.skip_ws();
    let key = if p.peek_is_quote() {
        let key = p.quoted()?;
        p.skip_ws();
        if !p.eat(')') {
            return Err(format!("expected ')' after the quoted key in {input:?}"));
        }
        key
    } else {
        let raw = p.take_while(|c| c != ')');
        if !p.eat(')') {
            return Err(format!("missing ')' after the key in {input:?}"));
        }
        raw.trim().as_bytes().to_vec()
    };
    if key.is_empty() {
        return Err(format!("empty key in {input:?}"));
    }
    p.skip_ws();
    let op_text = p.take_while(|c| matches!(c, '=' | '!' | '<' | '>'));
    let result = match op_text {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        ">=" | "<=" => {
            return Err(format!(
                "operator {op_text:?} is not supported; use '>', '<', '=' or '!=' (e.g. 'version(k) > 0')"
            ))
        }
        "" => {
            return Err(format!(
                "expected an operator (=, !=, > or <) after {name}(...) in {input:?}"
            ))
        }
        other => return Err(format!("unknown operator {other:?} (use =, !=, > or <)")),
    };
    p.skip_ws();
    let operand: Vec<u8> = if p.peek_is_quote() {
        let v = p.quoted()?;
        p.skip_ws();
        if !p.at_end() {
            return Err(format!(
                "unexpected {:?} after the quoted operand in {input:?}",
                p.rest()
            ));
        }
        v
    } else {
        let raw = p.rest().trim();
        if raw.is_empty() {
            return Err(format!(
                "missing operand after {op_text:?} in {input:?} (for an empty value write \"\")"
            ));
        }
        raw.as_bytes().to_vec()
    };
    let number = || -> Result<u64, String> {
        let text = String::from_utf8_lossy(&operand);
        text.parse::<u64>()
            .map_err(|_| format!("expected a non-negative integer after {op_text:?} for {name}(...), got {text:?}"))
    };
    Ok(match target {
        Target::Mod => Compare::mod_revision(key, result, number()?),
        Target::Create => Compare::create_revision(key, result, number()?),
        Target::Version => Compare::version(key, result, number()?),
        Target::Value => Compare::value(key, result, operand),
    })
}

#[derive(Clone, Copy)]
enum Target {
    Mod,
    Create,
    Version,
    Value,
}

/// Parses one `--then` / `--else` operation.
pub fn parse_op(input: &str) -> Result<RequestOp, String> {
    let tokens = tokenize(input)?;
    let Some((verb, args)) = tokens.split_first() else {
        return Err("empty operation (expected put KEY VALUE, get KEY or del KEY)".into());
    };
    let verb_text = String::from_utf8_lossy(&verb.bytes).to_ascii_lowercase();
    let mut prefix = false;
    let mut positional: Vec<Vec<u8>> = Vec::new();
    for token in args {
        if !token.quoted && token.bytes.starts_with(b"--") {
            match &token.bytes[..] {
                b"--prefix" if verb_text != "put" => prefix = true,
                other => {
                    return Err(format!(
                        "unknown option {:?} for {verb_text} (quote a key that starts with --)",
                        String::from_utf8_lossy(other)
                    ))
                }
            }
        } else {
            positional.push(token.bytes.clone());
        }
    }
    let count = positional.len();
    let arity = |want: &str| {
        format!(
            "{verb_text} takes {want}, got {count} argument{} in {input:?} (quote keys or values that contain spaces)",
            if count == 1 { "" } else { "s" }
        )
    };
    match verb_text.as_str() {
        "put" => {
            let [key, value]: [Vec<u8>; 2] = positional.try_into().map_err(|_| arity("KEY VALUE"))?;
            check_key(&key, input)?;
            Ok(RequestOp::put(key, value))
        }
        "get" | "range" => {
            let [key]: [Vec<u8>; 1] = positional.try_into().map_err(|_| arity("KEY"))?;
            if !prefix {
                check_key(&key, input)?;
            }
            Ok(RequestOp::range(RangeRequest {
                key,
                prefix,
                ..Default::default()
            }))
        }
        "del" | "delete" | "rm" => {
            let [key]: [Vec<u8>; 1] = positional.try_into().map_err(|_| arity("KEY"))?;
            if !prefix {
                check_key(&key, input)?;
            }
            Ok(RequestOp::delete_request(DeleteRequest {
                key,
                prefix,
                ..Default::default()
            }))
        }
        _ => Err(format!(
            "unknown operation {verb_text:?} (expected put KEY VALUE, get KEY or del KEY)"
        )),
    }
}

fn check_key(key: &[u8], input: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("empty key in {input:?}"));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
struct Token {
    bytes: Vec<u8>,
    quoted: bool,
}

/// Splits on whitespace, honouring quotes (see the module docs).
fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let mut p = Cursor::new(input);
    let mut tokens = Vec::new();
    loop {
        p.skip_ws();
        if p.at_end() {
            return Ok(tokens);
        }
        if p.peek_is_quote() {
            let bytes = p.quoted()?;
            if !p.at_end() && !p.peek().is_some_and(char::is_whitespace) {
                return Err(format!("expected a space after the closing quote in {input:?}"));
            }
            tokens.push(Token { bytes, quoted: true });
        } else {
            let word = p.take_while(|c| !c.is_whitespace());
            tokens.push(Token {
                bytes: word.as_bytes().to_vec(),
                quoted: false,
            });
        }
    }
}

/// A position in the input.
struct Cursor<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(input: &'a str) -> Self {
        Cursor { input, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_is_quote(&self) -> bool {
        matches!(self.peek(), Some('"' | '\''))
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, want: char) -> bool {
        if self.peek() == Some(want) {
            self.pos += want.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        self.take_while(char::is_whitespace);
    }

    fn take_while(&mut self, mut keep: impl FnMut(char) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if !keep(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        &self.input[start..self.pos]
    }

    /// A quoted string starting at the cursor, escapes resolved.
    fn quoted(&mut self) -> Result<Vec<u8>, String> {
        let start = self.pos;
        let quote = self.bump().ok_or("expected a quote")?;
        let mut out = Vec::new();
        loop {
            let c = self
                .bump()
                .ok_or_else(|| format!("unterminated {quote} quote starting at {:?}", &self.input[start..]))?;
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let e = self.bump().ok_or("backslash at end of input")?;
                    match e {
                        '\\' | '"' | '\'' => out.push(e as u8),
                        'n' => out.push(b'\n'),
                        't' => out.push(b'\t'),
                        'r' => out.push(b'\r'),
                        '0' => out.push(0),
                        'x' => {
                            let hex: String = (0..2).filter_map(|_| self.bump()).collect();
                            let byte = (hex.len() == 2 && hex.chars().all(|h| h.is_ascii_hexdigit()))
                                .then(|| u8::from_str_radix(&hex, 16).ok())
                                .flatten()
                                .ok_or_else(|| format!("\\x must be followed by two hex digits, got {hex:?}"))?;
                            out.push(byte);
                        }
                        other => {
                            return Err(format!(
                                "unknown escape \\{other} (escapes: \\\\ \\\" \\' \\n \\t \\r \\0 \\xHH)"
                            ))
                        }
                    }
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_client::proto::compare::TargetUnion;
    use roster_client::proto::request_op::Request;
    use roster_client::CompareTarget;

    fn cmp(s: &str) -> Compare {
        parse_compare(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        parse_compare(s).expect_err(s)
    }

    #[test]
    fn compares_of_every_target() {
        let c = cmp("mod(KEY) = 5");
        assert_eq!(c.key, b"KEY");
        assert_eq!(c.target(), CompareTarget::ModRevision);
        assert_eq!(c.result(), CompareResult::Equal);
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(5)));

        let c = cmp("version(KEY) > 0");
        assert_eq!(c.target(), CompareTarget::Version);
        assert_eq!(c.result(), CompareResult::Greater);
        assert_eq!(c.target_union, Some(TargetUnion::Version(0)));

        let c = cmp("create(KEY) = 0");
        assert_eq!(c.target(), CompareTarget::CreateRevision);
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(0)));

        let c = cmp("value(KEY) != abc");
        assert_eq!(c.target(), CompareTarget::Value);
        assert_eq!(c.result(), CompareResult::NotEqual);
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"abc".to_vec())));

        assert_eq!(cmp("mod_revision(k) < 7").result(), CompareResult::Less);
        assert_eq!(cmp("MOD(k)==7").result(), CompareResult::Equal);
        assert_eq!(cmp("create_revision(k)>1").target(), CompareTarget::CreateRevision);
    }

    #[test]
    fn spacing_and_quoting() {
        let c = cmp("  mod ( my/key )   =   12  ");
        assert_eq!(c.key, b"my/key");
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(12)));

        let c = cmp(r#"value("a (b)") = "x y""#);
        assert_eq!(c.key, b"a (b)");
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"x y".to_vec())));

        let c = cmp("value(k) = hello world");
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"hello world".to_vec())));

        let c = cmp(r#"value('k') = "\xff\n\"""#);
        assert_eq!(c.target_union, Some(TargetUnion::Value(vec![0xff, b'\n', b'"'])));

        let c = cmp(r#"value(k) = """#);
        assert_eq!(c.target_union, Some(TargetUnion::Value(Vec::new())));
    }

    #[test]
    fn compare_errors_are_clear() {
        assert!(err("").contains("expected a compare"));
        assert!(err("foo(k) = 1").contains("unknown compare target \"foo\""));
        assert!(err("mod k = 1").contains("expected '(' after \"mod\""));
        assert!(err("mod(k = 1").contains("missing ')'"));
        assert!(err("mod() = 1").contains("empty key"));
        assert!(err("mod(k) 1").contains("expected an operator"));
        assert!(err("mod(k) >= 1").contains("not supported"));
        assert!(err("mod(k) =! 1").contains("unknown operator"));
        assert!(err("mod(k) =").contains("missing operand"));
        assert!(err("mod(k) = abc").contains("non-negative integer"));
        assert!(err("mod(k) = -1").contains("non-negative integer"));
        assert!(err(r#"value(k) = "abc"#).contains("unterminated"));
        assert!(err(r#"value(k) = "a" b"#).contains("unexpected"));
        assert!(err(r#"value("k" = 1"#).contains("expected ')'"));
        assert!(err(r#"value(k) = "\q""#).contains("unknown escape"));
        assert!(err(r#"value(k) = "\xZZ""#).contains("two hex digits"));
    }

    fn op(s: &str) -> Request {
        parse_op(s).unwrap_or_else(|e| panic!("{s}: {e}")).request.unwrap()
    }

    #[test]
    fn operations() {
        match op("put k v") {
            Request::Put(p) => {
                assert_eq!(p.key, b"k");
                assert_eq!(p.value, b"v");
            }
            other => panic!("{other:?}"),
        }
        match op(r#"put "a key" 'a value'"#) {
            Request::Put(p) => {
                assert_eq!(p.key, b"a key");
                assert_eq!(p.value, b"a value");
            }
            other => panic!("{other:?}"),
        }
        match op(r#"put k """#) {
            Request::Put(p) => assert!(p.value.is_empty()),
            other => panic!("{other:?}"),
        }
        match op("get k") {
            Request::Range(r) => {
                assert_eq!(r.key, b"k");
                assert!(!r.prefix);
            }
            other => panic!("{other:?}"),
        }
        match op("GET --prefix app/") {
            Request::Range(r) => {
                assert_eq!(r.key, b"app/");
                assert!(r.prefix);
            }
            other => panic!("{other:?}"),
        }
        match op("del k") {
            Request::Delete(d) => {
                assert_eq!(d.key, b"k");
                assert!(!d.prefix);
            }
            other => panic!("{other:?}"),
        }
        match op("delete app/ --prefix") {
            Request::Delete(d) => assert!(d.prefix),
            other => panic!("{other:?}"),
        }
        match op(r#"del "--weird""#) {
            Request::Delete(d) => assert_eq!(d.key, b"--weird"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn operation_errors_are_clear() {
        let e = |s: &str| parse_op(s).expect_err(s);
        assert!(e("").contains("empty operation"));
        assert!(e("   ").contains("empty operation"));
        assert!(e("frob k").contains("unknown operation \"frob\""));
        assert!(e("put k").contains("put takes KEY VALUE, got 1 argument"));
        assert!(e("put k hello world").contains("got 3 arguments"));
        assert!(e("get").contains("get takes KEY"));
        assert!(e("del a b").contains("del takes KEY"));
        assert!(e("put k v --prefix").contains("unknown option"));
        assert!(e("get k --limit").contains("unknown option"));
        assert!(e(r#"put "k"v x"#).contains("space after the closing quote"));
        assert!(e(r#"put "" v"#).contains("empty key"));
    }

    #[test]
    fn tokenizer() {
        let t = tokenize(r#" a  "b c" 'd\'e' f"g "#).unwrap();
        let texts: Vec<_> = t.iter().map(|t| t.bytes.clone()).collect();
        assert_eq!(
            texts,
            vec![b"a".to_vec(), b"b c".to_vec(), b"d'e".to_vec(), b"f\"g".to_vec()]
        );
        assert!(t[1].quoted && !t[0].quoted);
    }
}
