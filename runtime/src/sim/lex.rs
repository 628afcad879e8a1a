//! Tokens of PTX source text.
//!
//! PTX opcodes carry their modifiers as dot-separated suffixes (`ld.global.v4.f32`), and
//! special registers have dotted names too (`%tid.x`), so a word runs through dots and
//! is split by the decoder, not here.

use super::error::ParseError;

/// One token and the 1-based line it starts on.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub kind: Tok,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A directive (`.reg`), opcode (`add.f32`), register (`%r1`), label or symbol.
    Word(String),
    /// A numeric literal, kept as written: `42`, `0x1F`, `0f3F800000`, `1.5`.
    Number(String),
    /// A single punctuation character: `, ; : { } [ ] ( ) < > + - ! @ |`.
    Punct(char),
    /// A string literal without its quotes (`.pragma "nounroll"`).
    Str(String),
}

impl Tok {
    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Number(n) => format!("`{n}`"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Str(s) => format!("`\"{s}\"`"),
        }
    }
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '%' | '.')
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.')
}

/// Splits `src` into tokens, dropping whitespace and `//` and `/* */` comments.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            let start = line;
            i += 2;
            loop {
                match chars.get(i) {
                    None => return Err(ParseError::new(start, "/*", "unterminated block comment")),
                    Some('*') if chars.get(i + 1) == Some(&'/') => {
                        i += 2;
                        break;
                    }
                    Some('\n') => line += 1,
                    Some(_) => {}
                }
                i += 1;
            }
        } else if is_word_start(c) {
            let start = i;
            i += 1;
            loop {
                match chars.get(i) {
                    Some(&c) if is_word_char(c) => i += 1,
                    // State-space scopes are part of a modifier: `.shared::cta`.
                    Some(':') if chars.get(i + 1) == Some(&':') => i += 2,
                    _ => break,
                }
            }
            let word = chars[start..i].iter().collect();
            tokens.push(Token {
                kind: Tok::Word(word),
                line,
            });
        } else if c.is_ascii_digit() {
            let start = i;
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                // A decimal exponent may carry a sign: `1e-3`. Hex literals (`0x1e`,
                // `0f3E800000`) never contain a sign, so only look back for `e` in decimals.
                let exponent_sign = matches!(d, '+' | '-')
                    && matches!(chars[i - 1], 'e' | 'E')
                    && !matches!(
                        chars.get(start + 1),
                        Some('x' | 'X' | 'f' | 'F' | 'd' | 'D')
                    );
                if d.is_ascii_alphanumeric() || d == '.' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            let number = chars[start..i].iter().collect();
            tokens.push(Token {
                kind: Tok::Number(number),
                line,
            });
        } else if c == '"' {
            let start = i + 1;
            i = start;
            while chars.get(i).is_some_and(|&c| c != '"' && c != '\n') {
                i += 1;
            }
            if chars.get(i) != Some(&'"') {
                return Err(ParseError::new(line, "\"", "unterminated string literal"));
            }
            tokens.push(Token {
                kind: Tok::Str(chars[start..i].iter().collect()),
                line,
            });
            i += 1;
        } else if ",;:{}[]()<>+-!@|".contains(c) {
            tokens.push(Token {
                kind: Tok::Punct(c),
                line,
            });
            i += 1;
        } else {
            return Err(ParseError::new(
                line,
                &c.to_string(),
                "unexpected character in PTX source",
            ));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        tokenize(src).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn words_keep_their_dots_and_numbers_their_spelling() {
        assert_eq!(
            kinds("@!%p1 ld.global.v4.f32 {%f1}, [%rd2+-16]; // x\n mov.f32 %f2, 0f3F800000;"),
            vec![
                Tok::Punct('@'),
                Tok::Punct('!'),
                Tok::Word("%p1".into()),
                Tok::Word("ld.global.v4.f32".into()),
                Tok::Punct('{'),
                Tok::Word("%f1".into()),
                Tok::Punct('}'),
                Tok::Punct(','),
                Tok::Punct('['),
                Tok::Word("%rd2".into()),
                Tok::Punct('+'),
                Tok::Punct('-'),
                Tok::Number("16".into()),
                Tok::Punct(']'),
                Tok::Punct(';'),
                Tok::Word("mov.f32".into()),
                Tok::Word("%f2".into()),
                Tok::Punct(','),
                Tok::Number("0f3F800000".into()),
                Tok::Punct(';'),
            ]
        );
        assert_eq!(kinds("1e-3 0x1e-1"), {
            vec![
                Tok::Number("1e-3".into()),
                Tok::Number("0x1e".into()),
                Tok::Punct('-'),
                Tok::Number("1".into()),
            ]
        });
    }

    #[test]
    fn scoped_state_spaces_stay_in_the_word_and_labels_keep_their_colon() {
        assert_eq!(
            kinds("ldmatrix.sync.aligned.m8n8.x4.shared::cta.b16 L1:"),
            vec![
                Tok::Word("ldmatrix.sync.aligned.m8n8.x4.shared::cta.b16".into()),
                Tok::Word("L1".into()),
                Tok::Punct(':'),
            ]
        );
    }

    #[test]
    fn lines_are_counted_through_comments() {
        let toks = tokenize("a\n/* one\ntwo */ b\n// c\nd").unwrap();
        let lines: Vec<usize> = toks.iter().map(|t| t.line).collect();
        assert_eq!(lines, vec![1, 3, 5]);
        assert!(tokenize("/* open").is_err());
        assert!(tokenize("mov.u32 %r1, #3;").is_err());
    }
}
