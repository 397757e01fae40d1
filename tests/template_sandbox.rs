//! Chat templates from model files are untrusted programs (defect 6): loops that never end,
//! strings that double until memory runs out and floods of output are one-line errors naming
//! the template's source, while real templates render exactly as before.
//!
//! This binary installs ft's budgeted allocator the way `main.rs` does, so the memory budget
//! is enforced here as it is in the `ft` binary.

#[global_allocator]
static GLOBAL: ft::budget::Budgeted<std::alloc::System> = ft::budget::Budgeted(std::alloc::System);

use ft::tokenizer::template::{ChatTemplate, Message, TemplateSpec, CHATML};
use std::time::Instant;

fn hostile(src: &str) -> (String, f64) {
    let t = Instant::now();
    let e = ChatTemplate::from_str_with(src, "<s>", "</s>")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    (e, t.elapsed().as_secs_f64())
}

#[test]
fn endless_loops_run_out_of_fuel() {
    let (e, s) = hostile(
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
    );
    assert!(e.contains("instructions"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert!(s < 10.0, "took {s:.1}s");
    // A macro that calls itself.
    let (e, _) = hostile("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert!(!e.is_empty() && !e.contains('\n'), "{e}");
}

#[test]
fn strings_that_double_hit_the_memory_budget() {
    assert!(
        ft::budget::enforced(),
        "the budgeted allocator is not installed"
    );
    let cases = [
        // Doubling inside a loop through a namespace.
        "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        // Doubling by plain assignments, no loop at all.
        &format!(
            "{{% set s = 'xxxxxxxxxxxxxxxx' %}}{}{{{{ s|length }}}}",
            "{% set s = s ~ s %}".repeat(40)
        ),
        // Doubling through a filter.
        "{% set ns = namespace(s='xy') %}{% for i in range(60) %}{% set ns.s = ns.s|replace('x', 'xx')|replace('y', 'yy') %}{% endfor %}{{ ns.s|length }}",
    ];
    for src in cases {
        let t = Instant::now();
        let tmpl = ChatTemplate::from_str_with("{{ messages[0]['content'] }}", "", "").unwrap();
        assert_eq!(
            tmpl.render(&[Message::new("user", "ok")], false).unwrap(),
            "ok"
        );
        let (e, _) = hostile(src);
        assert!(e.contains("memory") && !e.contains('\n'), "{src}: {e}");
        assert!(t.elapsed().as_secs_f64() < 20.0);
    }
}

#[test]
fn output_floods_are_capped() {
    let (e, _) = hostile("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}");
    assert!(e.contains("output exceeds"), "{e}");
}

#[test]
fn a_template_that_blows_up_later_is_disabled_after_its_first_overrun() {
    // Harmless for one message (the load-time check), hostile from two on.
    let src = "{% if messages|length > 1 %}{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}{% endif %}{{ messages[0]['content'] }}";
    let t = ChatTemplate::from_str_with(src, "", "").unwrap();
    let two = [Message::new("user", "a"), Message::new("assistant", "b")];
    let e = t.render(&two, false).unwrap_err().to_string();
    assert!(e.contains("memory"), "{e}");
    let e = t.render(&two[..1], false).unwrap_err().to_string();
    assert!(e.contains("disabled"), "{e}");
}

#[test]
fn real_templates_render_as_before_and_quickly() {
    let t = ChatTemplate::from_str_with(CHATML, "", "<|im_end|>").unwrap();
    let msgs = [Message::new("system", "S"), Message::new("user", "Hi")];
    assert_eq!(
        t.render(&msgs, true).unwrap(),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    // A long conversation is far inside the limits, which scale with the input.
    let long: Vec<Message> = (0..2000)
        .map(|i| {
            Message::new(
                if i % 2 == 0 { "user" } else { "assistant" },
                "x".repeat(500),
            )
        })
        .collect();
    let want: usize = long
        .iter()
        .map(|m| 24 + m.role.len() + m.content.len())
        .sum();
    assert_eq!(t.render(&long, false).unwrap().len(), want);
    // The built-in (ft's own source) renders in place; the same text from a file, sandboxed.
    let json = ft::testing::tiny_vocab()
        .build()
        .unwrap()
        .to_string(false)
        .unwrap();
    let tok = ft::tokenizer::Tokenizer::from_json_str(&json, None, None).unwrap();
    let builtin = ChatTemplate::from_spec(&TemplateSpec::Chatml, &tok).unwrap();
    assert_eq!(
        builtin.render(&msgs, true).unwrap(),
        t.render(&msgs, true).unwrap()
    );
    let time = |t: &ChatTemplate| {
        let n = 300;
        let start = Instant::now();
        for _ in 0..n {
            t.render(&msgs, true).unwrap();
        }
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    let (inline, sandboxed) = (time(&builtin), time(&t));
    eprintln!(
        "ChatML render: {inline:.0} µs in place, {sandboxed:.0} µs sandboxed (shared machine)"
    );
    assert!(sandboxed < 20_000.0, "{sandboxed} µs per render");
}
