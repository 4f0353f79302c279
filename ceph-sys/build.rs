//! Generates the raw bindings from the system headers, for loading at run time.
//!
//! The functions are bound with bindgen's dynamic-loading mode: one struct, `Ceph`, whose
//! fields are the functions' pointers, filled by `dlopen`/`dlsym` when `ceph_sys::load` is
//! first called. Nothing is linked here, so the binaries that use this crate have no
//! `DT_NEEDED` entry for librados or librbd and start (and run anything that touches no Ceph)
//! without them. The headers are still needed to build: a missing header or libclang stops
//! the build with the Debian package to install.

use std::env;
use std::path::PathBuf;

/// Header directories searched when `CEPH_INCLUDE_DIR` is not set.
const DEFAULT_INCLUDE_DIRS: &[&str] = &["/usr/include", "/usr/local/include"];

/// Each header we bind, with the Debian package that ships it.
const HEADERS: &[(&str, &str)] = &[
    ("rados/librados.h", "librados-dev"),
    ("rbd/librbd.h", "librbd-dev"),
];

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-env-changed=CEPH_INCLUDE_DIR");

    let include_dirs: Vec<PathBuf> = match env::var_os("CEPH_INCLUDE_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => DEFAULT_INCLUDE_DIRS.iter().map(PathBuf::from).collect(),
    };
    for (header, package) in HEADERS {
        if !include_dirs.iter().any(|dir| dir.join(header).is_file()) {
            panic!(
                "ceph-sys: header <{header}> not found in {include_dirs:?}.\n\
                 Install it with: apt-get install {package}\n\
                 (or point CEPH_INCLUDE_DIR at the directory that holds it)"
            );
        }
        for dir in &include_dirs {
            let path = dir.join(header);
            if path.is_file() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }

    if let Err(err) = clang_sys_available() {
        panic!("ceph-sys: {err}\nInstall it with: apt-get install libclang-dev");
    }

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("rados_.*")
        .allowlist_function("rbd_.*")
        .allowlist_type("rados_.*")
        .allowlist_type("rbd_.*")
        .allowlist_var("RBD_.*")
        .allowlist_var("LIBRBD_.*")
        .allowlist_var("LIBRADOS_.*")
        .allowlist_var("CEPH_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(true)
        // Functions become fields of one struct loaded at run time (see the top). With
        // every symbol required, each field is a plain function pointer and loading fails as
        // a whole, naming the symbol, when the library lacks one.
        .dynamic_library_name("Ceph")
        .dynamic_link_require_all(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for dir in &include_dirs {
        builder = builder.clang_arg(format!("-I{}", dir.display()));
    }
    let bindings = builder
        .generate()
        .unwrap_or_else(|err| panic!("ceph-sys: bindgen failed on wrapper.h: {err}"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("ceph-sys: cannot write bindings.rs into OUT_DIR");
}

/// bindgen panics with a generic message when libclang is missing; look for it first.
fn clang_sys_available() -> Result<(), String> {
    if env::var_os("LIBCLANG_PATH").is_some() {
        return Ok(());
    }
    let candidates = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib/llvm-14/lib",
        "/usr/lib/llvm-15/lib",
        "/usr/lib/llvm-16/lib",
        "/usr/lib",
        "/usr/local/lib",
    ];
    let found = candidates.iter().any(|dir| {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.starts_with("libclang") && name.contains(".so") && !name.contains("cpp")
                })
            })
            .unwrap_or(false)
    });
    if found {
        Ok(())
    } else {
        Err("libclang (needed by bindgen) not found (set LIBCLANG_PATH to its directory)".into())
    }
}
