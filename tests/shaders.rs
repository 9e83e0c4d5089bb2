//! GPU-free: composes every variant of every kernel, validates it with naga and translates
//! it with naga's SPIR-V, MSL and HLSL writers, so a shader error (or a backend-writer
//! failure) fails `cargo test` on any machine, not only on one with the right adapter.

use halfgrad::kernels::{all_variants, compose};
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn check_variant(name: &str, source: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let mut validator = Validator::new(ValidationFlags::all(), Capabilities::all());
    let info = validator.validate(&module).map_err(|e| format!("{e:?}"))?;
    // Resolve override constants to their defaults, as pipeline creation would.
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, "main")),
        &Default::default(),
    )
    .map_err(|e| format!("overrides: {e:?}"))?;

    let pipeline = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: "main".into(),
    };
    // Catch writer panics too (naga 30's SPIR-V writer panics on some cooperative-matrix
    // pointer expressions).
    let spv_result = std::panic::catch_unwind(|| {
        spv::write_vec(&module, &info, &spv::Options::default(), Some(&pipeline)).map(|_| ())
    });
    match spv_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("SPIR-V: {e:?}")),
        Err(_) => return Err("SPIR-V writer panicked".into()),
    }
    let uses_coop = source.contains("wgpu_cooperative_matrix");
    if !uses_coop {
        // Cooperative matrices are Vulkan-only in wgpu 30; the other writers cover the rest.
        let msl_pipeline = msl::PipelineOptions::default();
        msl::write_string(&module, &info, &msl::Options::default(), &msl_pipeline)
            .map_err(|e| format!("MSL: {e:?}"))?;
        let mut hlsl_out = String::new();
        let hlsl_opts = hlsl::Options::default();
        let hlsl_pipeline = hlsl::PipelineOptions::default();
        hlsl::Writer::new(&mut hlsl_out, &hlsl_opts, &hlsl_pipeline)
            .write(&module, &info, None)
            .map_err(|e| format!("HLSL: {e:?}"))?;
    }
    let _ = name;
    Ok(())
}

#[test]
fn every_kernel_variant_validates_and_translates() {
    let mut failures = Vec::new();
    let mut count = 0;
    for def in halfgrad::ops::all_kernels() {
        for variant in all_variants(def) {
            count += 1;
            let label = format!(
                "{} {:?} native_f16={}",
                def.name, variant.dtypes, variant.f16_native
            );
            match compose(def, &variant) {
                Ok(src) => {
                    if let Err(e) = check_variant(&label, &src) {
                        failures.push(format!("{label}: {e}"));
                    }
                }
                Err(e) => failures.push(format!("{label}: compose: {e}")),
            }
        }
    }
    println!("validated {count} kernel variants");
    assert!(
        failures.is_empty(),
        "{} of {count} variants failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// `//!use reduce` / `//!use state_words` pull in the shared modules for exactly the
/// kernels whose head or section asks, so the others carry no unused `var<workgroup>`.
#[test]
fn shared_modules_are_composed_only_where_asked() {
    let mut reducing = Vec::new();
    for def in halfgrad::ops::all_kernels() {
        let src = compose(def, &all_variants(def)[0]).unwrap();
        let asks = |m: &str| src.lines().any(|l| l.trim() == format!("//!use {m}"));
        assert_eq!(asks("reduce"), src.contains("fn wg_sum("), "{}", def.name);
        assert_eq!(
            asks("state_words"),
            src.contains("const SCALER_SCALE: u32 = 0u;"),
            "{}",
            def.name
        );
        if asks("reduce") {
            reducing.push(def.name);
        }
    }
    reducing.sort();
    assert_eq!(
        reducing,
        [
            "adam/finalize",
            "layernorm/backward_params",
            "layernorm/backward_rows",
            "layernorm/forward_stats",
            "loss_scale/check",
            "softmax_xent/forward_mean",
            "softmax_xent/forward_rows",
        ]
    );
}

#[test]
fn an_unknown_shared_module_is_a_shader_error() {
    use halfgrad::kernels::{KernelDef, Variant};
    static UNKNOWN: KernelDef = KernelDef::new(
        "test/unknown_use",
        "//!kernel k\n//!use no_such_module\n@compute @workgroup_size(1)\nfn main() {}\n",
        "k",
        &[],
    );
    let err = compose(&UNKNOWN, &Variant::new(&[], false)).unwrap_err();
    assert!(
        matches!(&err, halfgrad::Error::Shader { message, .. } if message.contains("no_such_module")),
        "{err}"
    );
}

/// The U32 storage prelude (no library kernel lists U32 yet): a slot that accepts it
/// composes, validates and translates, read-only and writable.
#[test]
fn u32_prelude_validates_and_translates() {
    use halfgrad::kernels::{KernelDef, Slot, Variant, U32_ONLY};
    use halfgrad::DType;
    static COPY_U32: KernelDef = KernelDef {
        name: "test/copy_u32",
        source: "//!kernel main\n@compute @workgroup_size(64)\nfn main(@builtin(global_invocation_id) id: vec3<u32>) {\n    store_dst(id.x, load_src(id.x) + 1u);\n}\n",
        section: "main",
        slots: &[Slot::read("src", U32_ONLY), Slot::write("dst", U32_ONLY)],
        params: false,
        cooperative_matrix: false,
        needs_f16: false,
    };
    let variant = Variant::new(&[DType::U32, DType::U32], false);
    let src = compose(&COPY_U32, &variant).unwrap();
    check_variant("copy_u32", &src).unwrap();
    // Float slots refuse it.
    static F32_SRC: KernelDef = KernelDef {
        name: "test/copy_u32_from_float",
        source: COPY_U32.source,
        section: "main",
        slots: &[
            Slot::read("src", halfgrad::kernels::ANY),
            Slot::write("dst", U32_ONLY),
        ],
        params: false,
        cooperative_matrix: false,
        needs_f16: false,
    };
    assert!(compose(&F32_SRC, &variant).is_err());
}
