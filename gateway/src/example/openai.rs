//! The parts of OpenAI's chat-completions shape the gateway and the stub read and write:
//! request fields, the `usage` object and streamed (SSE) chunks.

use serde_json::Value;

use crate::core::estimate::Usage;

/// (role, content) of each message with string content; other content counts as its JSON
/// text (a conservative stand-in for structured parts).
pub fn messages(body: &Value) -> Vec<(String, String)> {
    body.get("messages")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|m| {
                    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
                    let content = match m.get("content") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    (role.to_owned(), content)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `max_completion_tokens`, else `max_tokens`, if given as a non-negative integer.
pub fn max_tokens(body: &Value) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
}

/// Whether the request asks for a stream.
pub fn is_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// The `usage` object of a response or chunk, if it carries one.
pub fn usage(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    Some(Usage {
        prompt_tokens: n(u.get("prompt_tokens")),
        completion_tokens: n(u.get("completion_tokens")),
        cached_prompt_tokens: n(u.pointer("/prompt_tokens_details/cached_tokens")),
        reasoning_tokens: n(u.pointer("/completion_tokens_details/reasoning_tokens")),
    })
}

/// The provider's id of a response or chunk (bounded: at most 128 characters kept).
pub fn response_id(v: &Value) -> Option<String> {
    v.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(|id| id.chars().take(128).collect())
}

/// The text of a non-streamed response's first choice.
pub fn message_text(v: &Value) -> String {
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// Reads a stream of SSE bytes line by line, collecting delta text and the usage chunk.
#[derive(Debug, Default)]
pub struct StreamReader {
    pending: Vec<u8>,
    /// Concatenated `choices[].delta.content`.
    pub text: String,
    /// The usage chunk, if the stream carried one.
    pub usage: Option<Usage>,
    /// Whether `data: [DONE]` was seen.
    pub done: bool,
    /// The provider's response id (`id` of the first chunk that has one).
    pub id: Option<String>,
}

/// Longest SSE line kept while waiting for its end; longer ones are skipped (their text is
/// not counted), which bounds memory against a hostile upstream.
const MAX_LINE: usize = 1 << 20;

impl StreamReader {
    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            self.line(&line);
        }
        if self.pending.len() > MAX_LINE {
            self.pending.clear();
        }
    }

    fn line(&mut self, line: &[u8]) {
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        let Some(data) = line.trim_end().strip_prefix("data:") else {
            return;
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if self.id.is_none() {
            self.id = response_id(&chunk);
        }
        if let Some(choices) = chunk.get("choices").and_then(Value::as_array) {
            for c in choices {
                if let Some(t) = c.pointer("/delta/content").and_then(Value::as_str) {
                    self.text.push_str(t);
                }
            }
        }
        if let Some(u) = usage(&chunk) {
            self.usage = Some(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_reader_collects_text_and_usage_across_split_chunks() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,",
            "\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut r = StreamReader::default();
        for piece in stream.as_bytes().chunks(7) {
            r.feed(piece);
        }
        assert_eq!(r.text, "Hello");
        assert_eq!(r.id, None);
        assert!(r.done);
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 2,
                cached_prompt_tokens: 4,
                reasoning_tokens: 0
            })
        );
    }
}
