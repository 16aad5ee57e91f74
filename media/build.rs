//! Links bcg729 (G.729 Annex A/B, Belledonne Communications) statically from Debian's
//! `libbcg729-dev`, so the binary needs no G.729 library at run time.

fn main() {
    println!("cargo:rerun-if-env-changed=BCG729_LIB_DIR");
    let dirs: Vec<String> = std::env::var("BCG729_LIB_DIR")
        .map(|d| vec![d])
        .unwrap_or_else(|_| {
            [
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib/aarch64-linux-gnu",
                "/usr/lib",
                "/usr/local/lib",
            ]
            .map(String::from)
            .to_vec()
        });
    let Some(dir) = dirs
        .iter()
        .find(|d| std::path::Path::new(d).join("libbcg729.a").exists())
    else {
        panic!(
            "libbcg729.a not found in {dirs:?}: install Debian's libbcg729-dev \
             (`sudo apt-get install libbcg729-dev`; scripts/serve and .ci/run do), or set \
             BCG729_LIB_DIR"
        );
    };
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=static=bcg729");
}
