#!/usr/bin/env python3
"""Applies this repository's change to an upstream candle-core `src/backprop.rs` (see PATCHED.md):

    python3 vendor/candle-core/apply_patch.py path/to/upstream/backprop.rs > vendor/candle-core/src/backprop.rs
"""
import re
import sys

ACCUMULATE = """    /// Adds `grad` to the gradient of `tensor`; the first one is stored as it is, where upstream
    /// candle adds it to a zero-filled tensor (a memset and an add per op and argument).
    fn accumulate(&mut self, tensor: &Tensor, grad: &Tensor) -> Result<()> {
        match self.0.entry(tensor.id()) {
            Entry::Occupied(mut entry) => {
                let sum = entry.get().add(grad)?;
                entry.insert(sum);
            }
            Entry::Vacant(entry) => {
                entry.insert(grad.contiguous()?);
            }
        }
        Ok(())
    }

"""
OR_INSERT = "    fn or_insert(&mut self, tensor: &Tensor) -> Result<&mut Tensor> {"
PATTERN = re.compile(r"let (\w+) = grads\.or_insert\((\w+)\)\?;\n(\s*)\*\1 = \1\.add\(&(.+?)\)\?(;?)\n")


def replace(match):
    var, arg, _, expr, semi = match.groups()
    expr = expr.replace(f"{var}.dims()", f"{arg}.dims()")
    if var in expr:  # reads the stored gradient: left as it is
        return match.group(0)
    return f"grads.accumulate({arg}, &{expr})?{semi}\n"


source = open(sys.argv[1]).read()
patched = PATTERN.sub(replace, source)
if OR_INSERT not in patched:
    sys.exit("no GradStore::or_insert to put accumulate beside")
sys.stdout.write(patched.replace(OR_INSERT, ACCUMULATE + OR_INSERT))
