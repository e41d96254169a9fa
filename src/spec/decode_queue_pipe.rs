//! `[queue.NAME]` and `[pipe.NAME]`.
//!
//! This is a child module of `decode.rs`.

use super::*;

const MAX_QUEUE_CAPACITY: i64 = 16 * 1024 * 1024;

impl Decoder {
    pub(super) fn queue(&mut self, name: Sp<String>, t: &DeTable<'_>) -> Queue {
        let n = name.value.clone();
        let empty = Sp::new(Vec::new(), name.span.clone());
        let mut q = Queue {
            from: empty.clone(),
            to: empty,
            name,
            capacity: 1024,
            mode: QueueMode::Balance,
            framing: Framing::Line,
        };
        for (k, v) in t.iter() {
            let what = format!("queue.{n}.{}", key_str(k));
            match key_str(k) {
                "from" | "to" => {
                    let help = || match v.get_ref() {
                        DeValue::String(s) => Some(format!("write {} = [\"{s}\"]", key_str(k))),
                        _ => None,
                    };
                    {
                        let list = Sp::new(self.names(&what, v, &help), self.at(v.span()));
                        if key_str(k) == "from" {
                            q.from = list;
                        } else {
                            q.to = list;
                        }
                    }
                }
                "capacity" => {
                    if let Some(c) = self.int(&what, v, Code::BadCapacity, 1, MAX_QUEUE_CAPACITY) {
                        q.capacity = c as u32;
                    }
                }
                "mode" => {
                    if let Some(i) = self.choice(&what, v, &["balance", "broadcast"]) {
                        q.mode = [QueueMode::Balance, QueueMode::Broadcast][i];
                    }
                }
                "framing" => {
                    if let Some(i) = self.choice(&what, v, &["line", "nul"]) {
                        q.framing = [Framing::Line, Framing::Nul][i];
                    }
                }
                _ => self.unknown_key(k, KEYS_QUEUE, "a queue"),
            }
        }
        q
    }

    pub(super) fn pipe(&mut self, name: Sp<String>, t: &DeTable<'_>) -> Pipe {
        let n = name.value.clone();
        let (mut from, mut to, mut between) = (None, None, None);
        let mut bad = false;
        for (k, v) in t.iter() {
            let what = format!("pipe.{n}.{}", key_str(k));
            match key_str(k) {
                "from" | "to" => {
                    let help = match v.get_ref() {
                        DeValue::Array(a) if a.len() == 1 => Some(format!("a pipe joins one process to one: write {} = \"…\"", key_str(k))),
                        DeValue::Array(_) => Some("a pipe joins one process to one; for many producers or consumers use a [queue]".into()),
                        _ => None,
                    };
                    let value = match v.get_ref() {
                        DeValue::String(s) => Some(Sp::new(s.to_string(), self.at(v.span()))),
                        _ => {
                            self.wrong_type(&what, "a process name", v, help);
                            bad = true;
                            None
                        }
                    };
                    if key_str(k) == "from" {
                        from = Some((value, self.at(k.span())));
                    } else {
                        to = Some((value, self.at(k.span())));
                    }
                }
                "between" => match self.strings(&what, v, &|| None) {
                    Some(list) if list.len() == 2 => between = Some((list, self.at(k.span()))),
                    Some(list) => {
                        bad = true;
                        self.push(
                            Diagnostic::at(Code::PipeShape, self.at(v.span()), format!("`{what}` names {} process(es); a duplex pipe joins exactly two", list.len()))
                                .label("expected two names")
                                .help("write between = [\"client\", \"server\"]; for more processes use a [queue]"),
                        );
                    }
                    None => bad = true,
                },
                _ => self.unknown_key(k, KEYS_PIPE, "a pipe"),
            }
        }
        let ends = match (from, to, between) {
            (Some((Some(from), _)), Some((Some(to), _)), None) => PipeEnds::OneWay { from, to },
            (None, None, Some((list, _))) => {
                let mut it = list.into_iter();
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => PipeEnds::Duplex { between: [a, b] },
                    _ => PipeEnds::Invalid,
                }
            }
            _ if bad => PipeEnds::Invalid,
            (f, t, b) => {
                let (span, message) = match (&f, &t, &b) {
                    (_, _, Some((_, bs))) if f.is_some() || t.is_some() => (
                        bs.clone(),
                        format!("pipe `{n}` has both `between` and `from`/`to`"),
                    ),
                    (Some((_, fs)), None, None) => {
                        (fs.clone(), format!("pipe `{n}` has `from` but no `to`"))
                    }
                    (None, Some((_, ts)), None) => {
                        (ts.clone(), format!("pipe `{n}` has `to` but no `from`"))
                    }
                    _ => (name.span.clone(), format!("pipe `{n}` has no ends")),
                };
                self.push(
                    Diagnostic::at(Code::PipeShape, span, message)
                        .help("a pipe is one-way (from = \"a\", to = \"b\") or duplex (between = [\"a\", \"b\"])"),
                );
                PipeEnds::Invalid
            }
        };
        Pipe { name, ends }
    }
}
