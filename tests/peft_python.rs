//! Adapters move between ft and Hugging Face PEFT unchanged: `tests/peft_check.py` trains with
//! `ft train`, loads the result with `PeftModel.from_pretrained`, and loads PEFT-made adapters
//! with `ft --adapter`; NLL and greedy tokens must equal PyTorch's. Runs when python3 can import
//! torch, transformers, peft and tokenizers; otherwise prints SKIP (CI has no torch).

mod common;

use std::process::Command;

fn python_has_peft() -> bool {
    Command::new("python3")
        .args(["-c", "import torch, transformers, peft, tokenizers"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn adapters_interchange_with_python_peft() {
    if !python_has_peft() {
        eprintln!("SKIP: python3 cannot import torch, transformers, peft, tokenizers; the PEFT interchange check did not run");
        return;
    }
    let script = common::root().join("tests/peft_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--ft")
        .arg(common::ft_bin())
        .current_dir(common::root())
        .output()
        .expect("running python3 tests/peft_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "PASS"),
        "tests/peft_check.py failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}
