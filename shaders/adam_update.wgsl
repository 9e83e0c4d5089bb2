// Shared by adam.wgsl's `adamw` and `adamw_low` (`//!use adam_update`): one octet's or
// one element's update, and the skipped step's gradient clear. Reads the section's
// `params` (n, clear_grad) and the master / grad / exp_avg / exp_avg_sq slots.

// Octet o's update; returns the new master values (for `adamw_low`'s 16-bit copy).
fn update8(c: StepConsts, o: u32) -> Vec8 {
    let g = load8_grad(o);
    let p = load8_master(o);
    let m = load8_exp_avg(o);
    let v = load8_exp_avg_sq(o);
    let ra = adamw_math4(c, g.a, p.a, m.a, v.a);
    let rb = adamw_math4(c, g.b, p.b, m.b, v.b);
    store8_master(o, Vec8(ra.p, rb.p));
    store8_exp_avg(o, Vec8(ra.m, rb.m));
    store8_exp_avg_sq(o, Vec8(ra.v, rb.v));
    if (params.clear_grad != 0u) {
        store8_grad(o, Vec8(vec4<f32>(0.0), vec4<f32>(0.0)));
    }
    return Vec8(ra.p, rb.p);
}

// Element j's update (the tail); returns its new master value.
fn update1(c: StepConsts, j: u32) -> f32 {
    let r = adamw_math(c, load_grad(j), load_master(j), load_exp_avg(j), load_exp_avg_sq(j));
    store_master(j, r.x);
    store_exp_avg(j, r.y);
    store_exp_avg_sq(j, r.z);
    if (params.clear_grad != 0u) {
        store_grad(j, 0.0);
    }
    return r.x;
}

// Skipped step: parameters and moments untouched; the gradient is still cleared (when
// backward accumulates) so the next step starts from zero.
fn clear_grad8(o: u32, whole: u32) {
    if (params.clear_grad == 0u) {
        return;
    }
    if (o < whole) {
        store8_grad(o, Vec8(vec4<f32>(0.0), vec4<f32>(0.0)));
        return;
    }
    for (var j = 8u * o; j < params.n; j += 1u) {
        store_grad(j, 0.0);
    }
}
