//! ndbridge: records where `libsodium-sys-stable` built libsodium, so that `Build` can compile
//! libzmq's CURVE against it and link it.
fn main() {
    for key in ["INCLUDE", "LIB"] {
        let name = format!("DEP_SODIUM_{}", key);
        let value = std::env::var(&name)
            .unwrap_or_else(|_| panic!("libsodium-sys-stable did not report {}", name));
        println!("cargo:rustc-env=NDBRIDGE_SODIUM_{key}={value}");
    }
}
