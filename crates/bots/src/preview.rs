//! The org's preview service: for every finished upload in the spaces it is
//! in, a thumbnail of images (PNG, JPEG, GIF; at most 256 pixels a side) or
//! the beginning of a text file, sealed by the SDK under the space's key and
//! stored beside the file. PDF excerpts are not made (no PDF parser here).
//!
//! Images are decoded with limits (dimensions and memory), so a hostile
//! upload cannot exhaust the service.

use std::io::Cursor;

use client::Preview;

use crate::{Bot, Ctx};

/// Largest file previewed.
pub const MAX_FILE: u64 = 20 * 1024 * 1024;
/// Longest side of a thumbnail.
pub const THUMBNAIL: u32 = 256;
/// Characters of an excerpt.
pub const EXCERPT_CHARS: usize = 500;

/// The preview of a file's bytes, if one can be made.
pub fn make_preview(name: &str, bytes: &[u8]) -> Option<Preview> {
    let reader = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?;
    if reader.format().is_some() {
        let mut reader = reader;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(16_384);
        limits.max_image_height = Some(16_384);
        limits.max_alloc = Some(256 * 1024 * 1024);
        reader.limits(limits);
        let img = reader.decode().ok()?;
        // Only ever smaller: a small image is its own thumbnail.
        let thumb = if img.width() <= THUMBNAIL && img.height() <= THUMBNAIL {
            img
        } else {
            img.thumbnail(THUMBNAIL, THUMBNAIL)
        };
        let mut out = Cursor::new(Vec::new());
        thumb.write_to(&mut out, image::ImageFormat::Png).ok()?;
        return Some(Preview::Image { media_type: "image/png".into(), bytes: out.into_inner() });
    }
    let media_type = name.rsplit_once('.').and_then(|(_, ext)| match ext.to_ascii_lowercase().as_str() {
        "txt" | "md" | "csv" | "log" => Some("text/plain"),
        _ => None,
    });
    let text = search::extract_text(bytes, media_type)?;
    Some(Preview::Excerpt(text.chars().take(EXCERPT_CHARS).collect()))
}

/// The preview service's handler on `bot`.
pub fn preview_bot(bot: Bot) -> Bot {
    bot.on_file(|ctx: Ctx| async move {
        let Some(file) = ctx.file.clone() else { return Ok(()) };
        let session = ctx.session();
        let info = session.file_info(&file).await?;
        if info.size > MAX_FILE {
            tracing::info!(file = %file, size = info.size, "too large to preview");
            return Ok(());
        }
        // The plaintext goes to a private temporary file, read back, and removed.
        let tmp = std::env::temp_dir().join(format!("custos-preview-{}", uuid::Uuid::new_v4()));
        let downloaded = session.download_to(&file, &tmp, false, &|_, _| {}).await;
        let bytes = match downloaded {
            Ok(_) => std::fs::read(&tmp),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        let _ = std::fs::remove_file(&tmp);
        let Some(p) = make_preview(&info.name, &bytes?) else {
            tracing::info!(file = %file, "no preview for this kind of file");
            return Ok(());
        };
        session.put_preview(&file, &p).await?;
        tracing::info!(file = %file, "preview stored");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn thumbnails_keep_the_aspect_and_fit() {
        let Some(Preview::Image { bytes, media_type }) = make_preview("photo.png", &png(800, 600)) else {
            panic!("no thumbnail")
        };
        assert_eq!(media_type, "image/png");
        let t = image::load_from_memory(&bytes).unwrap();
        assert_eq!((t.width(), t.height()), (256, 192));
        // A small image is not enlarged.
        let Some(Preview::Image { bytes, .. }) = make_preview("icon.png", &png(40, 20)) else { panic!() };
        let t = image::load_from_memory(&bytes).unwrap();
        assert_eq!((t.width(), t.height()), (40, 20));
    }

    #[test]
    fn excerpts_and_refusals() {
        let text = "Quarterly plan\n".repeat(100);
        let Some(Preview::Excerpt(e)) = make_preview("plan.txt", text.as_bytes()) else { panic!("no excerpt") };
        assert_eq!(e.chars().count(), EXCERPT_CHARS);
        assert!(text.starts_with(&e));
        assert_eq!(make_preview("blob.bin", &[0u8, 159, 146, 150, 0, 1, 2]), None, "binary: nothing");
        // A truncated PNG (a header that promises an image) fails cleanly.
        let mut broken = png(100, 100);
        broken.truncate(60);
        assert_eq!(make_preview("broken.png", &broken), None);
        // A header claiming a huge image is refused by the limits, not allocated.
        let mut bomb = png(1, 1);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert_eq!(make_preview("bomb.png", &bomb), None);
    }
}
