//! Records the git revision for the run manifest (`IHDYN_GIT_REV`), when built from a checkout
//! (a plain clone or a `git worktree`, whose `.git` is a file pointing elsewhere).
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    // Rebuild when HEAD moves: watch the files git itself uses for HEAD and the branch refs of
    // this checkout (only those that exist: a missing path would rebuild on every command).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = std::path::PathBuf::from(dir);
        for p in ["HEAD", "refs/heads", "packed-refs"] {
            let path = dir.join(p);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
            let refs = std::path::PathBuf::from(common).join("refs/heads");
            if refs.exists() {
                println!("cargo:rerun-if-changed={}", refs.display());
            }
        }
    } else {
        println!("cargo:rerun-if-changed=build.rs");
    }
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
    println!("cargo:rustc-env=IHDYN_GIT_REV={rev}");
}
