//! Logging from `log.level`, `log.formatter` and `log.fields` (`RUST_LOG`
//! refines the level). One line per event on standard error, in one of
//! distribution's three forms:
//!
//! - `text`: `time level message key=value ...`, coloured only on a terminal;
//! - `json`: logrus's JSON (`time`, `level`, `msg`, then the fields);
//! - `logstash`: logstash's JSON (`@timestamp`, `@version`, `level`, `message`).
//!
//! Each line carries the event's fields, those of the spans it is in (a
//! request's id, method, URI, peer, user agent and user) and `log.fields`, all
//! at the top level. Values a client chose (user names, paths, user agents)
//! cannot forge lines: control characters are escaped in text, and JSON
//! escapes them anyway.

use std::fmt;
use std::io::{IsTerminal, Write};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Logstash,
}

pub fn init(cfg: &Config) {
    let level = cfg.log_level().unwrap_or_else(|| "info".to_owned());
    // Our crates log at the configured level; dependencies only warnings and up.
    let default = format!(
        "warn,berth={level},berth_server={level},berth_registry={level},berth_storage={level},\
         berth_metadata={level},berth_auth={level}"
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let format = match cfg.log.formatter.as_deref() {
        Some("json") => Format::Json,
        Some("logstash") => Format::Logstash,
        _ => Format::Text,
    };
    let fields: Map<String, Value> = cfg.log.fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let ansi = format == Format::Text && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let layer = Lines { format, fields, ansi, out: Box::new(|| Box::new(std::io::stderr()) as Box<dyn Write>) };
    let _ = tracing_subscriber::registry().with(filter).with(layer).try_init();
}

/// Where lines go: a fresh handle per line, so each line is written whole.
type Sink = Box<dyn Fn() -> Box<dyn Write> + Send + Sync>;

pub struct Lines {
    format: Format,
    fields: Map<String, Value>,
    ansi: bool,
    out: Sink,
}

/// The fields of a span, kept in its extensions.
struct SpanFields(Vec<(&'static str, Value)>);

#[derive(Default)]
struct Collect {
    message: Option<String>,
    fields: Vec<(&'static str, Value)>,
}

impl Collect {
    fn put(&mut self, field: &Field, v: Value) {
        if field.name() == "message" {
            self.message = Some(match v {
                Value::String(s) => s,
                other => other.to_string(),
            });
            return;
        }
        let name = field.name().strip_prefix("r#").unwrap_or(field.name());
        match self.fields.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = v,
            None => self.fields.push((name, v)),
        }
    }
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

impl<S> Layer<S> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut c = Collect { message: None, fields: Vec::with_capacity(attrs.metadata().fields().len()) };
        attrs.record(&mut c);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(c.fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(SpanFields(fields)) = ext.get_mut::<SpanFields>() else { return };
        let mut c = Collect { message: None, fields: std::mem::take(fields) };
        values.record(&mut c);
        *fields = c.fields;
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut c = Collect::default();
        event.record(&mut c);
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(f)) = span.extensions().get::<SpanFields>() {
                    spans.extend(f.iter().cloned());
                }
            }
        }
        let line = self.line(*event.metadata().level(), berth_types::time::now_millis(), c, spans);
        let mut out = (self.out)();
        let _ = out.write_all(line.as_bytes());
    }
}

impl Lines {
    /// One whole line, ending in a newline.
    fn line(&self, level: Level, now_ms: i64, event: Collect, spans: Vec<(&'static str, Value)>) -> String {
        let time = berth_types::time::rfc3339_millis(now_ms);
        let message = event.message.unwrap_or_default();
        let level_name = level.as_str().to_ascii_lowercase();
        // The event's own fields win over its spans', which win over log.fields.
        let mut fields: Vec<(&str, Value)> = event.fields;
        for (k, v) in spans.into_iter().rev() {
            if !fields.iter().any(|(f, _)| *f == k) {
                fields.push((k, v));
            }
        }
        for (k, v) in &self.fields {
            if !fields.iter().any(|(f, _)| f == k) {
                fields.push((k.as_str(), v.clone()));
            }
        }
        match self.format {
            Format::Text => {
                let lvl = if self.ansi {
                    let colour = match level {
                        Level::ERROR => "31",
                        Level::WARN => "33",
                        Level::INFO => "32",
                        _ => "2",
                    };
                    format!("\x1b[{colour}m{:<5}\x1b[0m", level.as_str())
                } else {
                    format!("{:<5}", level.as_str())
                };
                let mut s = format!("{time} {lvl} {}", escape(&message));
                for (k, v) in &fields {
                    s.push(' ');
                    s.push_str(&escape(k));
                    s.push('=');
                    s.push_str(&text_value(v));
                }
                s.push('\n');
                s
            }
            Format::Json | Format::Logstash => {
                let mut m = Map::new();
                if self.format == Format::Json {
                    m.insert("time".into(), Value::String(time));
                    m.insert("level".into(), Value::String(level_name));
                    m.insert("msg".into(), Value::String(message));
                } else {
                    m.insert("@timestamp".into(), Value::String(time));
                    m.insert("@version".into(), Value::String("1".into()));
                    m.insert("level".into(), Value::String(level_name));
                    m.insert("message".into(), Value::String(message));
                }
                for (k, v) in fields {
                    m.entry(k.to_owned()).or_insert(v);
                }
                let mut s = Value::Object(m).to_string();
                s.push('\n');
                s
            }
        }
    }
}

/// Control characters (newlines above all) as escapes, so one event stays one line.
fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A field value in a text line: bare when it is one plain word, quoted otherwise.
fn text_value(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let plain =
                !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
            if plain {
                s.clone()
            } else {
                format!("\"{}\"", escape(s).replace('"', "\\\""))
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Lines written through a layer of `format`, with `fields`.
    fn capture(format: Format, fields: &[(&str, &str)], f: impl FnOnce()) -> Vec<String> {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let b = buf.clone();
        let layer = Lines {
            format,
            fields: fields.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect(),
            ansi: false,
            out: Box::new(move || Box::new(Shared(b.clone()))),
        };
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn in_a_request() {
        let span = tracing::info_span!("request", "http.request.id" = "r1", "auth.user.name" = tracing::field::Empty);
        let _e = span.enter();
        span.record("auth.user.name", "eve\ninfo forged line");
        tracing::info!(user = "mallory\nERROR fake", status = 401u64, "failed login");
    }

    #[test]
    fn a_forged_newline_stays_inside_its_line() {
        let lines = capture(Format::Text, &[], in_a_request);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let l = &lines[0];
        assert!(l.contains("INFO  failed login"), "{l}");
        assert!(l.contains("user=\"mallory\\nERROR fake\""), "{l}");
        assert!(l.contains("auth.user.name=\"eve\\ninfo forged line\""), "{l}");
        assert!(l.contains("http.request.id=r1") && l.contains("status=401"), "{l}");
        assert!(!l.contains('\x1b'), "no colour off a terminal");
    }

    #[test]
    fn json_and_logstash_put_every_field_at_the_top() {
        let lines = capture(Format::Json, &[("service", "registry")], in_a_request);
        assert_eq!(lines.len(), 1);
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["msg"], "failed login");
        assert_eq!(v["level"], "info");
        assert_eq!(v["service"], "registry", "log.fields are top-level fields");
        assert_eq!(v["http.request.id"], "r1");
        assert_eq!(v["status"], 401);
        assert_eq!(v["user"], "mallory\nERROR fake");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));

        let lines = capture(Format::Logstash, &[("environment", "test")], in_a_request);
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!((v["@version"].as_str(), v["message"].as_str()), (Some("1"), Some("failed login")));
        assert!(v["@timestamp"].is_string());
        assert_eq!((v["level"].as_str(), v["environment"].as_str()), (Some("info"), Some("test")));
    }
}
