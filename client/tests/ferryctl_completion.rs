//! `ferryctl completion SHELL` prints a script the shell accepts: bash, loading it,
//! completes `ferryctl to<TAB>` to `topic` and `ferryctl topic con<TAB>` to
//! `consume`; zsh's and fish's scripts are generated too.

use std::process::Command;

fn completion(shell: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ferryctl"))
        .args(["completion", shell])
        .output()
        .expect("run ferryctl");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// What bash offers for the words typed so far, with the script loaded.
fn bash_offers(words: &[&str]) -> Vec<String> {
    let script = format!(
        "source <({} completion bash)\nCOMP_WORDS=({})\nCOMP_CWORD={}\n\
         _ferryctl ferryctl \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        env!("CARGO_BIN_EXE_ferryctl"),
        words.join(" "),
        words.len() - 1,
    );
    let output = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("run bash");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().to_owned())
        .collect()
}

#[test]
fn bash_completes_commands_from_the_generated_script() {
    assert_eq!(bash_offers(&["ferryctl", "to"]), vec!["topic"]);
    assert!(
        bash_offers(&["ferryctl", "topic", "con"]).contains(&"consume".to_owned()),
        "{:?}",
        bash_offers(&["ferryctl", "topic", "con"])
    );
}

#[test]
fn zsh_and_fish_scripts_are_generated() {
    assert!(completion("zsh").starts_with("#compdef ferryctl"));
    assert!(completion("fish").contains("complete -c ferryctl"));
}
