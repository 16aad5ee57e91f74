//! The N-1 mixing step (pure): sum every input into a wide accumulator once, then give each
//! listener the sum minus its own input, saturated to 16 bits.

/// Adds `input` into the accumulator.
#[inline]
pub fn accumulate(acc: &mut [i32], input: &[i16]) {
    for (a, &s) in acc.iter_mut().zip(input) {
        *a += i32::from(s);
    }
}

/// Writes `acc - own`, saturated, into `out`: what a listener hears.
#[inline]
pub fn minus_own(acc: &[i32], own: &[i16], out: &mut [i16]) {
    for ((o, &a), &s) in out.iter_mut().zip(acc).zip(own) {
        *o = saturate(a - i32::from(s));
    }
}

/// Writes the whole sum, saturated: what a recorder of the room hears.
#[inline]
pub fn total(acc: &[i32], out: &mut [i16]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = saturate(a);
    }
}

#[inline]
fn saturate(value: i32) -> i16 {
    value.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FRAME_SAMPLES: usize = 160;
    type Frame = [i16; FRAME_SAMPLES];

    fn mix_all(inputs: &[Frame]) -> Vec<Frame> {
        let mut acc = [0i32; FRAME_SAMPLES];
        inputs.iter().for_each(|f| accumulate(&mut acc, f));
        inputs
            .iter()
            .map(|own| {
                let mut out = [0i16; FRAME_SAMPLES];
                minus_own(&acc, own, &mut out);
                out
            })
            .collect()
    }

    fn frame() -> impl Strategy<Value = Frame> {
        proptest::collection::vec(any::<i16>(), FRAME_SAMPLES)
            .prop_map(|v| v.try_into().expect("length is FRAME_SAMPLES"))
    }

    proptest! {
        #[test]
        fn each_hears_the_saturated_sum_of_the_others(inputs in proptest::collection::vec(frame(), 1..8)) {
            let outs = mix_all(&inputs);
            for (i, out) in outs.iter().enumerate() {
                for n in 0..FRAME_SAMPLES {
                    let others: i32 = inputs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, f)| i32::from(f[n])).sum();
                    prop_assert_eq!(out[n], others.clamp(-32768, 32767) as i16);
                }
            }
        }

        #[test]
        fn order_does_not_matter(mut inputs in proptest::collection::vec(frame(), 2..6)) {
            let outs = mix_all(&inputs);
            inputs.reverse();
            let mut reversed = mix_all(&inputs);
            reversed.reverse();
            prop_assert_eq!(outs, reversed);
        }
    }

    #[test]
    fn silence_in_silence_out() {
        let outs = mix_all(&[[0; FRAME_SAMPLES]; 5]);
        assert!(outs.iter().all(|f| f.iter().all(|&s| s == 0)));
    }
}
