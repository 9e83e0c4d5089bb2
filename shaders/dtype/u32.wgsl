// Storage prelude: U32 integers (labels, token ids), 4 bytes an element. Not a float:
// only slots that list DType::U32 accept it, and they read it as integers.
@group(0) @binding($B) var<storage, $A> $N: array<u32>;

fn load_$N(i: u32) -> u32 {
    return $N[i];
}
//! write
fn store_$N(i: u32, v: u32) {
    $N[i] = v;
}
