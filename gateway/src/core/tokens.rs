//! Token counting for calls whose provider reported no usage (a stream without a usage
//! chunk, a cancelled call). OpenAI models are counted with their real encoding
//! (`tiktoken-rs`: `o200k_base` for the GPT-4o/4.1/5 and o-series families, `cl100k_base`
//! for GPT-4/3.5); every other model with a documented approximation, one token per 4 bytes
//! of UTF-8, rounded up (about right for English prose with the common BPE tokenizers, and
//! deliberately on the high side for code and CJK text, where tokens are shorter). A usage
//! event built from these counts is flagged estimated.

use tiktoken_rs::CoreBPE;

/// How a model's tokens are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// OpenAI's `o200k_base` encoding.
    O200k,
    /// OpenAI's `cl100k_base` encoding.
    Cl100k,
    /// ⌈UTF-8 bytes / 4⌉.
    Approximate,
}

/// Tokens OpenAI adds per chat message (role and separators) and to prime the reply, as in
/// OpenAI's cookbook for the GPT-4 and GPT-4o families.
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

impl Counter {
    /// The counter for `model` (a catalog model or the caller's name).
    pub fn for_model(model: &str) -> Counter {
        let bare = model.rsplit('/').next().unwrap_or(model);
        match tiktoken_rs::tokenizer::get_tokenizer(bare) {
            Some(tiktoken_rs::tokenizer::Tokenizer::O200kBase) => Counter::O200k,
            Some(tiktoken_rs::tokenizer::Tokenizer::Cl100kBase) => Counter::Cl100k,
            _ => Counter::Approximate,
        }
    }

    fn bpe(self) -> Option<&'static CoreBPE> {
        match self {
            Counter::O200k => Some(tiktoken_rs::o200k_base_singleton()),
            Counter::Cl100k => Some(tiktoken_rs::cl100k_base_singleton()),
            Counter::Approximate => None,
        }
    }

    /// Tokens of `text`.
    pub fn count(self, text: &str) -> u64 {
        match self.bpe() {
            Some(bpe) => bpe.encode_ordinary(text).len() as u64,
            None => (text.len() as u64).div_ceil(4),
        }
    }

    /// Prompt tokens of chat `messages` given as (role, content).
    pub fn count_chat<'a>(self, messages: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
        messages
            .into_iter()
            .fold(REPLY_PRIMING, |sum, (role, content)| {
                sum.saturating_add(PER_MESSAGE + self.count(role) + self.count(content))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_models_use_their_encoding_and_others_the_approximation() {
        assert_eq!(Counter::for_model("gpt-4o-mini"), Counter::O200k);
        assert_eq!(Counter::for_model("openai/gpt-4o"), Counter::O200k);
        assert_eq!(Counter::for_model("gpt-4"), Counter::Cl100k);
        assert_eq!(Counter::for_model("claude-sonnet-4"), Counter::Approximate);
        // "hello world" is two tokens in both OpenAI encodings.
        assert_eq!(Counter::O200k.count("hello world"), 2);
        assert_eq!(Counter::Cl100k.count("hello world"), 2);
        assert_eq!(Counter::Approximate.count("hello world"), 3);
        assert_eq!(Counter::Approximate.count(""), 0);
        // 3 priming + (3 + "user" 1 + "hello world" 2).
        assert_eq!(Counter::O200k.count_chat([("user", "hello world")]), 9);
    }
}
