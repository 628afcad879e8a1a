//! Shape and dtype inference: the type of an op's result from its operands' types.
//!
//! Errors are plain descriptions; [`crate::Graph::push`] wraps them with the node, the op
//! and the operand types.

use crate::{checked_numel, fmt_shape, DType, Op, Shape, TensorType};

/// Output extent of a sliding window (convolution or pooling) along one axis, with
/// PyTorch's rule for `ceil_mode`: the last window must start inside the input or the
/// left padding.
pub fn window_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Result<usize, String> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(format!(
            "kernel ({kernel}), stride ({stride}) and dilation ({dilation}) must be positive"
        ));
    }
    let too_large = || {
        format!(
            "window of kernel {kernel}, dilation {dilation} over an input of {input} with \
             padding {padding} is too large to count"
        )
    };
    let span = dilation
        .checked_mul(kernel - 1)
        .and_then(|s| s.checked_add(1))
        .ok_or_else(too_large)?;
    let padded = padding
        .checked_mul(2)
        .and_then(|p| p.checked_add(input))
        .ok_or_else(too_large)?;
    if padded < span {
        return Err(format!(
            "window of extent {span} does not fit an input of {input} with padding {padding}"
        ));
    }
    let room = padded - span;
    let mut out = if ceil_mode {
        room.div_ceil(stride)
    } else {
        room / stride
    } + 1;
    // `input + padding` cannot overflow (it is at most `padded`); the product may.
    if ceil_mode
        && (out - 1)
            .checked_mul(stride)
            .is_none_or(|start| start >= input + padding)
    {
        out -= 1;
    }
    Ok(out)
}

fn same_dtype(inputs: &[&TensorType]) -> Result<DType, String> {
    let d = inputs[0].dtype;
    if inputs.iter().any(|t| t.dtype != d) {
        let ds: Vec<String> = inputs.iter().map(|t| t.dtype.to_string()).collect();
        return Err(format!(
            "operands must share one dtype, got {}",
            ds.join(", ")
        ));
    }
    Ok(d)
}

fn rank_is(t: &TensorType, rank: usize, what: &str) -> Result<(), String> {
    if t.rank() != rank {
        return Err(format!(
            "{what} must have rank {rank}, got {}",
            fmt_shape(&t.shape)
        ));
    }
    Ok(())
}

fn check_axes(axes: &[usize], rank: usize) -> Result<(), String> {
    for (i, &a) in axes.iter().enumerate() {
        if a >= rank {
            return Err(format!("axis {a} out of range for rank {rank}"));
        }
        if axes[..i].contains(&a) {
            return Err(format!("axis {a} listed twice"));
        }
    }
    Ok(())
}

/// Whether `from` broadcasts to `to` under numpy's rule.
pub fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == t || f == 1)
}

/// The type of `op` applied to operands of types `inputs`.
pub fn infer_type(op: &Op, inputs: &[&TensorType]) -> Result<TensorType, String> {
    if let Some(n) = op.arity() {
        if inputs.len() != n {
            return Err(format!("expects {n} operand(s), got {}", inputs.len()));
        }
    } else if inputs.is_empty() {
        return Err("expects at least one operand".into());
    }
    if op.needs_float() && inputs.iter().any(|t| !t.dtype.is_float()) {
        return Err("needs floating-point operands".into());
    }
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::Constant { .. } => {
            Err("source nodes carry their own type".into())
        }
        Op::Neg | Op::Exp | Op::Log | Op::Sqrt | Op::Rsqrt | Op::Sigmoid | Op::Relu => {
            Ok(inputs[0].clone())
        }
        Op::Cast { to } => Ok(TensorType::new(*to, inputs[0].shape.clone())),
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Max | Op::CmpGt | Op::CmpGe | Op::CmpEq => {
            let d = same_dtype(inputs)?;
            if inputs[0].shape != inputs[1].shape {
                return Err(format!(
                    "operand shapes differ: {} vs {} (broadcast explicitly)",
                    fmt_shape(&inputs[0].shape),
                    fmt_shape(&inputs[1].shape)
                ));
            }
            Ok(TensorType::new(d, inputs[0].shape.clone()))
        }
        Op::Select => {
            let d = same_dtype(inputs)?;
            if inputs.iter().any(|t| t.shape != inputs[0].shape) {
                return Err("condition and both branches must have one shape".into());
            }
            Ok(TensorType::new(d, inputs[0].shape.clone()))
        }
        Op::Conv2d {
            stride,
            padding,
            dilation,
            groups,
        } => {
            let (x, w) = (inputs[0], inputs[1]);
            rank_is(x, 4, "input")?;
            rank_is(w, 4, "weight")?;
            same_dtype(inputs)?;
            let g = *groups;
            if g == 0 || x.shape[1] % g != 0 || w.shape[0] % g != 0 {
                return Err(format!(
                    "groups={g} must divide input channels {} and output channels {}",
                    x.shape[1], w.shape[0]
                ));
            }
            let in_all = w.shape[1].checked_mul(g);
            if in_all != Some(x.shape[1]) {
                let in_all = in_all.map_or("more than a 64-bit count".into(), |n| n.to_string());
                return Err(format!(
                    "weight expects {} input channels per group ({in_all} in all), input has {}",
                    w.shape[1], x.shape[1]
                ));
            }
            let mut out = vec![x.shape[0], w.shape[0], 0, 0];
            for i in 0..2 {
                out[2 + i] = window_output_size(
                    x.shape[2 + i],
                    w.shape[2 + i],
                    stride[i],
                    padding[i],
                    dilation[i],
                    false,
                )?;
            }
            Ok(TensorType::new(x.dtype, out))
        }
        Op::AvgPool2d {
            kernel,
            stride,
            padding,
            ceil_mode,
            ..
        }
        | Op::MaxPool2d {
            kernel,
            stride,
            padding,
            ceil_mode,
        } => {
            let x = inputs[0];
            rank_is(x, 4, "input")?;
            let mut out = x.shape.clone();
            for i in 0..2 {
                if padding[i] > kernel[i] / 2 {
                    return Err(format!(
                        "padding {} exceeds half the kernel {}",
                        padding[i], kernel[i]
                    ));
                }
                out[2 + i] = window_output_size(
                    x.shape[2 + i],
                    kernel[i],
                    stride[i],
                    padding[i],
                    1,
                    *ceil_mode,
                )?;
            }
            Ok(TensorType::new(x.dtype, out))
        }
        Op::ResizeNearest { size } => {
            let x = inputs[0];
            rank_is(x, 4, "input")?;
            if size.contains(&0) || x.shape[2] == 0 || x.shape[3] == 0 {
                return Err("sizes must be positive".into());
            }
            Ok(TensorType::new(
                x.dtype,
                vec![x.shape[0], x.shape[1], size[0], size[1]],
            ))
        }
        Op::ReduceSum { axes, keepdims }
        | Op::ReduceMean { axes, keepdims }
        | Op::ReduceMax { axes, keepdims } => {
            let x = inputs[0];
            check_axes(axes, x.rank())?;
            let shape: Shape = x
                .shape
                .iter()
                .enumerate()
                .filter_map(|(i, &d)| match (axes.contains(&i), keepdims) {
                    (false, _) => Some(d),
                    (true, true) => Some(1),
                    (true, false) => None,
                })
                .collect();
            Ok(TensorType::new(x.dtype, shape))
        }
        Op::Broadcast { shape } => {
            if !broadcasts_to(&inputs[0].shape, shape) {
                return Err(format!(
                    "cannot broadcast {} to {}",
                    fmt_shape(&inputs[0].shape),
                    fmt_shape(shape)
                ));
            }
            Ok(TensorType::new(inputs[0].dtype, shape.clone()))
        }
        Op::Reshape { shape } => {
            let elements = inputs[0].numel();
            match checked_numel(shape) {
                Some(n) if n == elements => {}
                Some(n) => {
                    return Err(format!(
                        "cannot reshape {} ({elements} elements) to {} ({n} elements)",
                        fmt_shape(&inputs[0].shape),
                        fmt_shape(shape)
                    ))
                }
                None => {
                    return Err(format!(
                        "cannot reshape {} ({elements} elements) to {}: its element count \
                         overflows a 64-bit count",
                        fmt_shape(&inputs[0].shape),
                        fmt_shape(shape)
                    ))
                }
            }
            Ok(TensorType::new(inputs[0].dtype, shape.clone()))
        }
        Op::Slice { axis, start, end } => {
            let x = inputs[0];
            check_axes(&[*axis], x.rank())?;
            if start >= end || *end > x.shape[*axis] {
                return Err(format!(
                    "slice {start}..{end} is empty or exceeds axis {axis} of extent {}",
                    x.shape[*axis]
                ));
            }
            let mut shape = x.shape.clone();
            shape[*axis] = end - start;
            Ok(TensorType::new(x.dtype, shape))
        }
        Op::Concat { axis } => {
            let d = same_dtype(inputs)?;
            let first = inputs[0];
            check_axes(&[*axis], first.rank())?;
            let mut total = 0;
            for t in inputs {
                let same_elsewhere = t.rank() == first.rank()
                    && (0..t.rank()).all(|i| i == *axis || t.shape[i] == first.shape[i]);
                if !same_elsewhere {
                    return Err(format!(
                        "operands {} and {} differ outside axis {axis}",
                        fmt_shape(&first.shape),
                        fmt_shape(&t.shape)
                    ));
                }
                total = t.shape[*axis]
                    .checked_add(total)
                    .ok_or("the concatenated extent overflows a 64-bit count")?;
            }
            let mut shape = first.shape.clone();
            shape[*axis] = total;
            Ok(TensorType::new(d, shape))
        }
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => {
            let (a, b) = (inputs[0], inputs[1]);
            rank_is(a, 2, "left operand")?;
            rank_is(b, 2, "right operand")?;
            let d = same_dtype(inputs)?;
            let (m, ka) = if *transpose_a {
                (a.shape[1], a.shape[0])
            } else {
                (a.shape[0], a.shape[1])
            };
            let (kb, n) = if *transpose_b {
                (b.shape[1], b.shape[0])
            } else {
                (b.shape[0], b.shape[1])
            };
            if ka != kb {
                return Err(format!("inner dimensions differ: {ka} vs {kb}"));
            }
            Ok(TensorType::new(d, vec![m, n]))
        }
        Op::OneHot { classes, dtype } => {
            let l = inputs[0];
            rank_is(l, 1, "labels")?;
            if l.dtype != DType::I64 {
                return Err(format!("labels must be i64, got {}", l.dtype));
            }
            if !dtype.is_float() || *classes == 0 {
                return Err("one_hot needs a positive class count and a float dtype".into());
            }
            Ok(TensorType::new(*dtype, vec![l.shape[0], *classes]))
        }
        Op::Conv2dBackwardData {
            stride,
            padding,
            dilation,
            groups,
            input_size,
        } => {
            let (dy, w) = (inputs[0], inputs[1]);
            rank_is(dy, 4, "gradient")?;
            rank_is(w, 4, "weight")?;
            let channels = w.shape[1]
                .checked_mul(*groups)
                .ok_or("weight channels times groups overflows a 64-bit count")?;
            let x = spatial_type(dy, channels, input_size);
            let forward = conv(stride, padding, dilation, groups);
            adjoint_of(&forward, &[&x, w], dy, x.clone())
        }
        Op::Conv2dBackwardWeight {
            stride,
            padding,
            dilation,
            groups,
            kernel,
        } => {
            let (x, dy) = (inputs[0], inputs[1]);
            rank_is(x, 4, "input")?;
            rank_is(dy, 4, "gradient")?;
            if *groups == 0 || x.shape[1] % groups != 0 {
                return Err(format!(
                    "groups={groups} must divide input channels {}",
                    x.shape[1]
                ));
            }
            let w = TensorType::new(
                x.dtype,
                vec![dy.shape[1], x.shape[1] / groups, kernel[0], kernel[1]],
            );
            let forward = conv(stride, padding, dilation, groups);
            adjoint_of(&forward, &[x, &w], dy, w.clone())
        }
        Op::AvgPool2dBackward {
            kernel,
            stride,
            padding,
            ceil_mode,
            count_include_pad,
            input_size,
        } => {
            let dy = inputs[0];
            rank_is(dy, 4, "gradient")?;
            let x = spatial_type(dy, dy.shape[1], input_size);
            let forward = Op::AvgPool2d {
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
                ceil_mode: *ceil_mode,
                count_include_pad: *count_include_pad,
            };
            adjoint_of(&forward, &[&x], dy, x.clone())
        }
        Op::MaxPool2dBackward {
            kernel,
            stride,
            padding,
            ceil_mode,
        } => {
            let (x, dy) = (inputs[0], inputs[1]);
            let forward = Op::MaxPool2d {
                kernel: *kernel,
                stride: *stride,
                padding: *padding,
                ceil_mode: *ceil_mode,
            };
            adjoint_of(&forward, &[x], dy, x.clone())
        }
        Op::ResizeNearestBackward { input_size } => {
            let dy = inputs[0];
            rank_is(dy, 4, "gradient")?;
            let x = spatial_type(dy, dy.shape[1], input_size);
            let forward = Op::ResizeNearest {
                size: [dy.shape[2], dy.shape[3]],
            };
            adjoint_of(&forward, &[&x], dy, x.clone())
        }
        Op::AllReduce { replicas, .. } => {
            if *replicas == 0 {
                return Err("a group needs at least one replica".into());
            }
            Ok(inputs[0].clone())
        }
    }
}

fn conv(stride: &[usize; 2], padding: &[usize; 2], dilation: &[usize; 2], groups: &usize) -> Op {
    Op::Conv2d {
        stride: *stride,
        padding: *padding,
        dilation: *dilation,
        groups: *groups,
    }
}

/// `[N, channels, size]` in the dtype of the NCHW value `like`.
fn spatial_type(like: &TensorType, channels: usize, size: &[usize; 2]) -> TensorType {
    TensorType::new(like.dtype, vec![like.shape[0], channels, size[0], size[1]])
}

/// Types an adjoint op by re-running the forward op's inference: the adjoint is valid
/// exactly when `forward` applied to `operands` yields the gradient's type, and then it
/// produces `result` (the type of the operand being differentiated).
fn adjoint_of(
    forward: &Op,
    operands: &[&TensorType],
    grad: &TensorType,
    result: TensorType,
) -> Result<TensorType, String> {
    let expected = infer_type(forward, operands)?;
    if &expected != grad {
        return Err(format!(
            "gradient {grad} does not match the {} result {expected}",
            forward.name()
        ));
    }
    Ok(result)
}
