//! A loss-curve picture beside the checkpoint (`loss.png`): training loss in blue, held-out MLM loss in
//! orange, over steps, on a light grid. Drawn and PNG-encoded here (stored deflate blocks), so the
//! toolkit needs no plotting or image dependency for one small chart.

use std::path::Path;

use crate::error::Result;
use crate::files::write::write_file;

const WIDTH: usize = 640;
const HEIGHT: usize = 400;
const MARGIN: usize = 40;
const BACKGROUND: [u8; 3] = [255, 255, 255];
const GRID: [u8; 3] = [225, 225, 225];
const AXIS: [u8; 3] = [90, 90, 90];
const TRAIN: [u8; 3] = [31, 119, 180];
const EVAL: [u8; 3] = [255, 127, 14];

/// An RGB canvas.
struct Canvas {
    pixels: Vec<[u8; 3]>,
}

impl Canvas {
    fn new() -> Self {
        Canvas {
            pixels: vec![BACKGROUND; WIDTH * HEIGHT],
        }
    }

    fn set(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if (0..WIDTH as i64).contains(&x) && (0..HEIGHT as i64).contains(&y) {
            self.pixels[y as usize * WIDTH + x as usize] = color;
        }
    }

    /// A line two pixels thick (Bresenham).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, color);
            self.set(x, y + 1, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(HEIGHT * (1 + WIDTH * 3));
        for row in self.pixels.chunks(WIDTH) {
            raw.push(0); // no filter
            row.iter().for_each(|p| raw.extend_from_slice(p));
        }
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(WIDTH as u32).to_be_bytes());
        ihdr.extend_from_slice(&(HEIGHT as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut png, b"IHDR", &ihdr);
        chunk(&mut png, b"IDAT", &zlib_stored(&raw));
        chunk(&mut png, b"IEND", &[]);
        png
    }
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zlib stream of uncompressed (stored) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in data {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// Draws training and evaluation loss over steps into a PNG file.
pub fn write_loss_curve(path: &Path, train: &[(f64, f64)], eval: &[(f64, f64)]) -> Result<()> {
    let all = train.iter().chain(eval);
    let (mut x_max, mut y_min, mut y_max) = (1f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all.filter(|(_, y)| y.is_finite()) {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let span = (y_max - y_min).max(1e-9);
    let (plot_w, plot_h) = ((WIDTH - 2 * MARGIN) as f64, (HEIGHT - 2 * MARGIN) as f64);
    let to_pixel = |(x, y): (f64, f64)| {
        let px = MARGIN as f64 + x / x_max * plot_w;
        let py = MARGIN as f64 + (y_max - y) / span * plot_h;
        (px.round() as i64, py.round() as i64)
    };
    let mut canvas = Canvas::new();
    for i in 0..=4 {
        let y = (MARGIN as f64 + plot_h * f64::from(i) / 4.0) as i64;
        canvas.line((MARGIN as i64, y), ((WIDTH - MARGIN) as i64, y), GRID);
        let x = (MARGIN as f64 + plot_w * f64::from(i) / 4.0) as i64;
        canvas.line((x, MARGIN as i64), (x, (HEIGHT - MARGIN) as i64), GRID);
    }
    let (left, bottom) = (MARGIN as i64, (HEIGHT - MARGIN) as i64);
    canvas.line((left, MARGIN as i64), (left, bottom), AXIS);
    canvas.line((left, bottom), ((WIDTH - MARGIN) as i64, bottom), AXIS);
    for (series, color) in [(train, TRAIN), (eval, EVAL)] {
        let points: Vec<(i64, i64)> = series
            .iter()
            .filter(|(_, y)| y.is_finite())
            .map(|&p| to_pixel(p))
            .collect();
        for pair in points.windows(2) {
            canvas.line(pair[0], pair[1], color);
        }
        for &(x, y) in &points {
            canvas.set(x, y, color);
        }
    }
    write_file(path, &canvas.png())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn writes_a_png() {
        let path = std::env::temp_dir().join(format!("bert-loss-{}.png", std::process::id()));
        let train: Vec<(f64, f64)> = (1..100)
            .map(|s| (f64::from(s), 10.0 / f64::from(s).sqrt()))
            .collect();
        write_loss_curve(&path, &train, &[(50.0, 2.0), (99.0, 1.5)]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(bytes.ends_with(&[0xAE, 0x42, 0x60, 0x82]));
    }
}
