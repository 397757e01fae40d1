//! `ft run` (one prompt, streamed) and `ft chat` (interactive, multi-turn, KV cache kept).

use super::common::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use ft::generate::{generate, Finish, SamplingParams, Session};
use ft::model::{Ctx, Loaded};
use ft::tokenizer::{ChatTemplate, Message, TemplateSpec};
use std::io::Write;

#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Maximum new tokens.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256)]
    pub n_predict: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f64,
    /// Keep the K most likely tokens (0 = off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f64,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Penalise tokens seen in the last 64 (1 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Stop when this text is generated (repeatable).
    #[arg(long = "stop", value_name = "STR")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    pub fn params(&self) -> Result<SamplingParams> {
        // `--top-p 1` means off, but a value outside (0, 1] is still an error.
        let p = SamplingParams {
            temperature: self.temp,
            top_k: (self.top_k > 0).then_some(self.top_k),
            top_p: (self.top_p != 1.0).then_some(self.top_p),
            seed: self.seed,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: 64,
        };
        if let Err(e) = p.validate() {
            let flag = match e.field {
                "temperature" => "--temp",
                "top_k" => "--top-k",
                "top_p" => "--top-p",
                _ => "--repeat-penalty",
            };
            bail!("{flag} {}", e.message);
        }
        Ok(p)
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt. Special tokens written in it (<|im_start|>) are parsed as such, unless
    /// --no-special or --chat (a chat message is always plain text).
    #[arg(short = 'p', long = "prompt")]
    pub prompt: String,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Treat special-token text in the prompt as plain text.
    #[arg(long = "no-special")]
    pub no_special: bool,
    /// Wrap the prompt in the model's chat template as a user turn.
    #[arg(long)]
    pub chat: bool,
    /// System prompt (with --chat).
    #[arg(long)]
    pub system: Option<String>,
    /// Chat template override: chatml, llama3, mistral, or Jinja source.
    #[arg(long = "chat-template")]
    pub chat_template: Option<TemplateSpec>,
    /// Print one JSON object instead of streaming text: the prompt's token ids, the generated
    /// ids (a stop token that ended generation not included), the text and the finish reason.
    /// For comparing with another runtime token by token.
    #[arg(long = "print-ids")]
    pub print_ids: bool,
}

/// The `--chat-template` given, else the model's own, else ChatML (with a note).
pub fn template(loaded: &Loaded, spec: Option<&TemplateSpec>) -> Result<ChatTemplate> {
    if spec.is_none() && loaded.template.is_none() {
        eprintln!("ft: the model has no chat template; using chatml");
    }
    Ok(ChatTemplate::choose(
        spec,
        loaded.template.as_ref(),
        &loaded.tokenizer,
    )?)
}

pub fn run(a: RunArgs) -> Result<()> {
    let params = a.sampling.params()?;
    let loaded = a.model.load()?;
    // With --chat the prompt is a message: its text is plain text, whatever it says.
    let ids = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(Message::new("system", s.clone()));
        }
        msgs.push(Message::new("user", a.prompt.clone()));
        let tmpl = template(&loaded, a.chat_template.as_ref())?;
        loaded.tokenizer.encode_chat(&tmpl, &msgs, true)?
    } else {
        loaded.tokenizer.encode_prompt(&a.prompt, !a.no_special)?
    };
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    let ctx = Ctx::infer(a.model.mode(), a.model.adapter_slot());
    let mut session = Session::new(&loaded.model, ctx);
    if a.print_ids {
        let s = &a.sampling;
        let out = generate(
            &mut session,
            &loaded.tokenizer,
            &ids,
            &params,
            s.n_predict,
            &s.stop,
            |_| true,
        )?;
        let json = serde_json::json!({
            "prompt_ids": ids,
            "ids": out.tokens,
            "text": out.text,
            "finish": match out.finish {
                Finish::Stop => "stop",
                Finish::Length => "length",
            },
        });
        println!("{json}");
        report(&out);
        return Ok(());
    }
    let out = generate_to_stdout(&mut session, &loaded, &ids, &params, &a.sampling)?;
    report(&out);
    Ok(())
}

/// Generate after `ids`, streaming text to stdout as it comes, then a newline.
fn generate_to_stdout(
    session: &mut Session,
    loaded: &Loaded,
    ids: &[u32],
    params: &SamplingParams,
    s: &SamplingArgs,
) -> Result<ft::generate::Generated> {
    let mut stdout = std::io::stdout().lock();
    let out = generate(
        session,
        &loaded.tokenizer,
        ids,
        params,
        s.n_predict,
        &s.stop,
        |t| {
            let _ = stdout.write_all(t.as_bytes());
            let _ = stdout.flush();
            true
        },
    )?;
    writeln!(stdout)?;
    Ok(out)
}

fn report(out: &ft::generate::Generated) {
    let n = out.tokens.len();
    eprintln!(
        "ft: prompt {} tokens in {:.2}s ({:.1} tok/s), generated {} tokens in {:.2}s ({:.1} tok/s), stop: {}",
        out.prompt_tokens,
        out.prefill_secs,
        out.prompt_tokens as f64 / out.prefill_secs.max(1e-9),
        n,
        out.decode_secs,
        n as f64 / out.decode_secs.max(1e-9),
        match out.finish {
            Finish::Stop => "end of turn",
            Finish::Length => "length",
        }
    );
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System prompt for the conversation.
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Chat template override: chatml, llama3, mistral, or Jinja source.
    #[arg(long = "chat-template")]
    pub chat_template: Option<TemplateSpec>,
}

pub fn chat(a: ChatArgs) -> Result<()> {
    let params = a.sampling.params()?;
    let loaded = a.model.load()?;
    let tmpl = template(&loaded, a.chat_template.as_ref())?;
    let ctx = Ctx::infer(a.model.mode(), a.model.adapter_slot());
    let mut session = Session::new(&loaded.model, ctx);
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(Message::new("system", s.clone()));
    }
    let mut rl = rustyline::DefaultEditor::new().context("cannot open the terminal")?;
    eprintln!("ft chat: type a message; Ctrl-D or Ctrl-C to quit, /reset to start over.");
    loop {
        let line = match rl.readline("> ") {
            Ok(l) => l,
            Err(
                rustyline::error::ReadlineError::Eof | rustyline::error::ReadlineError::Interrupted,
            ) => break,
            Err(e) => return Err(e.into()),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/reset" {
            messages.retain(|m: &Message| m.role == "system");
            session = Session::new(&loaded.model, ctx);
            continue;
        }
        let _ = rl.add_history_entry(line);
        messages.push(Message::new("user", line));
        let ids = loaded.tokenizer.encode_chat(&tmpl, &messages, true)?;
        // The session reuses the cached prefix: only the new turn is computed.
        let out = match generate_to_stdout(&mut session, &loaded, &ids, &params, &a.sampling) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("\nerror: {e}");
                messages.pop();
                continue;
            }
        };
        messages.push(Message::new("assistant", out.text.trim().to_string()));
    }
    Ok(())
}
