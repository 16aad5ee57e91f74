//! The N-1 mixing step (pure): sum the mixed talkers into a wide accumulator once, then give
//! each listener the sum (or the sum minus its own input) at its output gain, as floats for
//! the limiter.

/// Adds `input` into the accumulator.
#[inline]
pub fn accumulate(acc: &mut [i32], input: &[i16]) {
    for (a, &s) in acc.iter_mut().zip(input) {
        *a += i32::from(s);
    }
}

/// Writes `acc * gain` into `out`: what a listener who is not mixed hears, before limiting.
#[inline]
pub fn widen(acc: &[i32], gain: f32, out: &mut [f32]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = a as f32 * gain;
    }
}

/// Writes `(acc - own) * gain` into `out`: what a mixed talker hears, before limiting.
#[inline]
pub fn minus_own(acc: &[i32], own: &[i16], gain: f32, out: &mut [f32]) {
    for ((o, &a), &s) in out.iter_mut().zip(acc).zip(own) {
        *o = (a - i32::from(s)) as f32 * gain;
    }
}

/// Writes a 16-bit frame into `out` as is: a sound a listener hears alone, before limiting.
#[inline]
pub fn widen_frame(frame: &[i16], out: &mut [f32]) {
    for (o, &s) in out.iter_mut().zip(frame) {
        *o = f32::from(s);
    }
}

/// Adds a 16-bit frame to `out`: a prompt over what a listener hears, before limiting.
#[inline]
pub fn add_frame(out: &mut [f32], frame: &[i16]) {
    for (o, &s) in out.iter_mut().zip(frame) {
        *o += f32::from(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_own_removes_exactly_the_listener() {
        let mut acc = [0i32; 4];
        accumulate(&mut acc, &[1, 2, 3, 4]);
        accumulate(&mut acc, &[10, 20, 30, 32767]);
        let mut out = [0.0f32; 4];
        minus_own(&acc, &[1, 2, 3, 4], 1.0, &mut out);
        assert_eq!(out, [10.0, 20.0, 30.0, 32767.0]);
        widen(&acc, 0.5, &mut out);
        assert_eq!(out, [5.5, 11.0, 16.5, 16385.5]);
    }
}
