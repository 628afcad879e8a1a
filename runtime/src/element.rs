//! Element types the host runtime computes in.
//!
//! Floating tensors live in memory as `f32` (the product) or `f64` (the precision the
//! gradient checker uses); integer tensors as `i64`. Kernels are written once, generic
//! over [`Element`] (everything) or [`Float`] (what needs division, `exp`, GEMM).

use crate::Storage;
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// A scalar type a [`Storage`] can hold.
pub trait Element:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Debug
    + 'static
    + Add<Output = Self>
    + AddAssign
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    /// The identity of `max`: `-inf` for floats.
    const LOWEST: Self;
    /// The type sums are accumulated in, so that long f32 reductions stay accurate.
    type Acc: Element;

    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn widen(self) -> Self::Acc;
    fn narrow(acc: Self::Acc) -> Self;
    fn is_nan(self) -> bool;
    /// The storage's elements, if it holds this type.
    fn view(storage: &Storage) -> Option<&[Self]>;
    fn wrap(data: Vec<Self>) -> Storage;

    /// `max` that propagates NaN from either side, like PyTorch.
    fn max_nan(self, other: Self) -> Self {
        if self.is_nan() || self > other {
            self
        } else {
            other
        }
    }
}

/// A floating element type: what convolution, division and transcendental ops need.
pub trait Float: Element + Div<Output = Self> {
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;

    /// `c = a * b + beta * c` for strided matrices `a [m,k]`, `b [k,n]`, `c [m,n]`, each
    /// given as `(slice, row stride, column stride)`. With `beta = 0`, `c` is only written.
    /// GEMM packs a column-major `a` and a row-major `b` fastest.
    ///
    /// # Panics
    /// If a view reaches past the end of its slice (a caller bug, checked because the
    /// kernel reads through raw pointers).
    fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: Mat<'_, Self>,
        b: Mat<'_, Self>,
        beta: Self,
        c: MatMut<'_, Self>,
    );
}

/// A read-only strided matrix view: `(data, row stride, column stride)`.
pub type Mat<'a, T> = (&'a [T], usize, usize);
/// A mutable strided matrix view.
pub type MatMut<'a, T> = (&'a mut [T], usize, usize);

/// The highest index a `rows x cols` strided view touches, plus one.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// Checks the views before handing raw pointers to `matrixmultiply`; a failure here is a
/// kernel bug, never bad user input, so it panics rather than corrupting memory.
fn check_views<T>(m: usize, k: usize, n: usize, a: &Mat<'_, T>, b: &Mat<'_, T>, c: &MatMut<'_, T>) {
    assert!(
        a.0.len() >= extent(m, k, a.1, a.2),
        "gemm: A view out of bounds"
    );
    assert!(
        b.0.len() >= extent(k, n, b.1, b.2),
        "gemm: B view out of bounds"
    );
    assert!(
        c.0.len() >= extent(m, n, c.1, c.2),
        "gemm: C view out of bounds"
    );
}

macro_rules! float_element {
    ($t:ty, $variant:ident, $gemm:path) => {
        impl Element for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            type Acc = f64;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn widen(self) -> f64 {
                self as f64
            }
            fn narrow(acc: f64) -> Self {
                acc as $t
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn view(storage: &Storage) -> Option<&[Self]> {
                match storage {
                    Storage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(data: Vec<Self>) -> Storage {
                Storage::$variant(data)
            }
        }

        impl Float for $t {
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn gemm(
                m: usize,
                k: usize,
                n: usize,
                a: Mat<'_, Self>,
                b: Mat<'_, Self>,
                beta: Self,
                c: MatMut<'_, Self>,
            ) {
                check_views(m, k, n, &a, &b, &c);
                if m == 0 || n == 0 {
                    return;
                }
                // SAFETY: `check_views` proved every index the strided views reach lies
                // inside its slice, and `c` is borrowed mutably, so it aliases nothing.
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.0.as_ptr(),
                        a.1 as isize,
                        a.2 as isize,
                        b.0.as_ptr(),
                        b.1 as isize,
                        b.2 as isize,
                        beta,
                        c.0.as_mut_ptr(),
                        c.1 as isize,
                        c.2 as isize,
                    )
                }
            }
        }
    };
}

float_element!(f32, F32, matrixmultiply::sgemm);
float_element!(f64, F64, matrixmultiply::dgemm);

impl Element for i64 {
    const ZERO: Self = 0;
    const ONE: Self = 1;
    const LOWEST: Self = i64::MIN;
    type Acc = i64;
    fn from_f64(v: f64) -> Self {
        // Rust's `as` truncates toward zero and saturates, like a C cast without the UB.
        v as i64
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn widen(self) -> i64 {
        self
    }
    fn narrow(acc: i64) -> Self {
        acc
    }
    fn is_nan(self) -> bool {
        false
    }
    fn view(storage: &Storage) -> Option<&[Self]> {
        match storage {
            Storage::I64(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(data: Vec<Self>) -> Storage {
        Storage::I64(data)
    }
}
