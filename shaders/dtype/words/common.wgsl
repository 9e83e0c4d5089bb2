// 16-byte storage preludes (kernels that say `//!words16`): eight elements, an "octet",
// per access group. An octet is 16 bytes of a 16-bit tensor (one vec4<u32> word) or 32
// bytes of an f32 tensor (two vec4<f32> words); elements 8o .. 8o + 3 in `a`, 8o + 4 ..
// 8o + 7 in `b`. `load8_NAME(o)` / `store8_NAME(o, v)` move whole octets; `load_`,
// `load2_`, `store_` and `store2_` address single elements and pairs as the 4-byte
// preludes do (tails and scalar kernels).
struct Vec8 {
    a: vec4<f32>,
    b: vec4<f32>,
}
