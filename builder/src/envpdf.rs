//! The printable env: an A4 PDF with the env's text, then its QR codes
//! ([`crate::envqr`] payloads), two to a page, each labelled `n/N`.
//!
//! Made in process with `pdf-writer` (typst's low-level PDF writer: a few
//! small dependencies) and `qrcode` (without its image renderer): the text
//! is set in the standard Courier font (nothing embedded), each QR code is
//! drawn as filled rectangles, one per run of dark modules. The text is for
//! a human reader: characters outside printable ASCII are shown as `?` and
//! long lines are wrapped (continuations marked `+` in the margin); the QR
//! codes carry the exact bytes.

use anyhow::Context;
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};
use qrcode::{Color, EcLevel, QrCode};

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const MARGIN: f32 = 42.0;
const FONT_SIZE: f32 = 7.5;
const LEADING: f32 = 9.0;
/// Courier's advance is 0.6 em.
const COLUMNS: usize = ((PAGE_W - 2.0 * MARGIN - 12.0) / (FONT_SIZE * 0.6)) as usize;
/// The side of a QR code with its quiet zone, in points.
const QR_SIDE: f32 = 330.0;
const QUIET: usize = 4;

/// The PDF for an env: `title` (e.g. the domain and file name) heads every
/// page, `text` is the env, `payloads` its QR codes.
pub fn render(title: &str, text: &[u8], payloads: &[String]) -> anyhow::Result<Vec<u8>> {
    let lines = text_lines(text);
    let per_page = ((PAGE_H - 2.0 * MARGIN - 2.0 * LEADING) / LEADING) as usize;
    let text_pages: Vec<&[String]> = lines.chunks(per_page.max(1)).collect();
    let qr_pages: Vec<&[String]> = payloads.chunks(2).collect();
    let n_pages = text_pages.len() + qr_pages.len();

    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let font = Ref::new(3);
    let font_name = Name(b"F1");
    let page_ref = |i: usize| Ref::new(4 + 2 * i as i32);
    let content_ref = |i: usize| Ref::new(5 + 2 * i as i32);

    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids((0..n_pages).map(page_ref))
        .count(n_pages as i32);
    pdf.type1_font(font).base_font(Name(b"Courier"));

    let mut page_no = 0;
    let header = |c: &mut Content, page_no: usize, what: &str| {
        c.begin_text();
        c.set_font(font_name, 8.0);
        c.set_leading(10.0);
        c.next_line(MARGIN, PAGE_H - MARGIN + 10.0);
        let head = format!("{} - page {}/{n_pages}", ascii(title), page_no + 1);
        c.show(Str(head.as_bytes()));
        c.next_line_using_leading();
        c.show(Str(ascii(what).as_bytes()));
        c.end_text();
    };
    for chunk in &text_pages {
        let mut c = Content::new();
        header(
            &mut c,
            page_no,
            "the text (the QR codes after it carry the exact bytes)",
        );
        c.begin_text();
        c.set_font(font_name, FONT_SIZE);
        c.set_leading(LEADING);
        c.next_line(MARGIN, PAGE_H - MARGIN - 2.0 * LEADING);
        for line in chunk.iter() {
            c.show(Str(line.as_bytes()));
            c.next_line_using_leading();
        }
        c.end_text();
        write_page(
            &mut pdf,
            page_ref(page_no),
            content_ref(page_no),
            tree,
            font,
            c,
        );
        page_no += 1;
    }
    for pair in &qr_pages {
        let mut c = Content::new();
        header(
            &mut c,
            page_no,
            "QR codes (restore: imgbuild env unpack THIS.pdf -o env.yml)",
        );
        for (slot, payload) in pair.iter().enumerate() {
            let top = PAGE_H - MARGIN - 20.0 - slot as f32 * (QR_SIDE + 40.0);
            let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
                .context("making a QR code")?;
            let label = format!(
                "QR {} (version {}, {} characters)",
                crate::envqr::label(payload),
                match code.version() {
                    qrcode::Version::Normal(v) | qrcode::Version::Micro(v) => v,
                },
                payload.len()
            );
            c.begin_text();
            c.set_font(font_name, 10.0);
            c.next_line(MARGIN, top - 12.0);
            c.show(Str(label.as_bytes()));
            c.end_text();
            draw_qr(&mut c, &code, MARGIN, top - 18.0);
        }
        write_page(
            &mut pdf,
            page_ref(page_no),
            content_ref(page_no),
            tree,
            font,
            c,
        );
        page_no += 1;
    }
    Ok(pdf.finish())
}

fn write_page(pdf: &mut Pdf, page: Ref, content: Ref, tree: Ref, font: Ref, c: Content) {
    let mut p = pdf.page(page);
    p.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
        .parent(tree)
        .contents(content);
    p.resources().fonts().pair(Name(b"F1"), font);
    p.finish();
    pdf.stream(content, &c.finish());
}

/// Draws `code` with its quiet zone, its top left corner at (`x`, `top`).
fn draw_qr(c: &mut Content, code: &QrCode, x: f32, top: f32) {
    let w = code.width();
    let module = QR_SIDE / (w + 2 * QUIET) as f32;
    let colors = code.to_colors();
    c.set_fill_gray(0.0);
    for row in 0..w {
        let mut col = 0;
        while col < w {
            if colors[row * w + col] != Color::Dark {
                col += 1;
                continue;
            }
            let start = col;
            while col < w && colors[row * w + col] == Color::Dark {
                col += 1;
            }
            c.rect(
                x + (start + QUIET) as f32 * module,
                top - (row + QUIET + 1) as f32 * module,
                (col - start) as f32 * module,
                module,
            );
        }
    }
    c.fill_nonzero();
}

/// The env's lines as printable ASCII, wrapped at [`COLUMNS`]; a gutter
/// column holds `+` on continuation lines.
fn text_lines(text: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = ascii(&line.replace('\t', "    "));
        let chars: Vec<char> = line.chars().collect();
        if chars.is_empty() {
            out.push(String::new());
        }
        for (i, part) in chars.chunks(COLUMNS).enumerate() {
            let gutter = if i == 0 { ' ' } else { '+' };
            out.push(format!("{gutter} {}", part.iter().collect::<String>()));
        }
    }
    if text.ends_with('\n') {
        out.pop();
    }
    out
}

/// `s` with everything but printable ASCII as `?`.
fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wrap_and_stay_ascii() {
        let long = "x".repeat(COLUMNS + 5);
        let t = format!("a\u{e9}b\n\n{long}\n");
        let l = text_lines(t.as_bytes());
        assert_eq!(l[0], "  a?b");
        assert_eq!(l[1], "");
        assert!(l[2].starts_with("  x") && l[3] == format!("+ {}", "x".repeat(5)));
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn renders_a_pdf() {
        let p = crate::envqr::payloads(&[7u8; 3000]);
        let pdf = render("ecs.example.org env.yml", b"#cloud-config\n", &p).unwrap();
        assert!(pdf.starts_with(b"%PDF-"));
    }
}
