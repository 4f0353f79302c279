// Checks a backup store with Go's encoding/json (Longhorn's struct definitions) and
// pierrec/lz4 (v2 API from Debian; Longhorn uses v4, same frame format) + compress/gzip: every cfg decodes, re-marshals to the same bytes, and
// every block referenced decompresses to content whose sha512[:64] is its name.
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/pierrec/lz4"
)

type Volume struct {
	Name                 string
	Size                 int64 `json:",string"`
	Labels               map[string]string
	CreatedTime          string
	LastBackupName       string
	LastBackupAt         string
	BlockCount           int64  `json:",string"`
	BackingImageName     string `json:",string"`
	BackingImageChecksum string `json:",string"`
	CompressionMethod    string `json:",string"`
	StorageClassName     string `json:",string"`
	DataEngine           string `json:",string"`
}

type ProcessingBlocks struct {
	sync.Mutex
	blocks map[string][]*BlockMapping
}

type BlockMapping struct {
	Offset        int64
	BlockChecksum string
}

type BackupFile struct {
	FilePath string
}

type Backup struct {
	sync.Mutex
	Name                  string
	VolumeName            string
	SnapshotName          string
	SnapshotCreatedAt     string
	CreatedTime           string
	Size                  int64 `json:",string"`
	Labels                map[string]string
	Parameters            map[string]string
	IsIncremental         bool
	CompressionMethod     string
	NewlyUploadedDataSize int64 `json:",string"`
	ReUploadedDataSize    int64 `json:",string"`
	ProcessingBlocks      *ProcessingBlocks
	Blocks                []BlockMapping `json:",omitempty"`
	SingleFile            BackupFile
}

func check(err error, what string) {
	if err != nil {
		fmt.Printf("FAIL %s: %v\n", what, err)
		os.Exit(1)
	}
}

func main() {
	root := os.Args[1]
	files, blocks := 0, 0
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		check(err, p)
		if info.IsDir() || !strings.HasSuffix(p, ".cfg") {
			return nil
		}
		raw, err := os.ReadFile(p)
		check(err, p)
		var out []byte
		if strings.HasSuffix(p, "volume.cfg") {
			var v Volume
			check(json.NewDecoder(bytes.NewReader(raw)).Decode(&v), p)
			out, err = json.Marshal(&v)
		} else {
			var b Backup
			check(json.NewDecoder(bytes.NewReader(raw)).Decode(&b), p)
			out, err = json.Marshal(&b)
			volDir := filepath.Dir(filepath.Dir(p))
			bs := int64(2 << 20)
			if s, ok := b.Parameters["backup-block-size"]; ok {
				fmt.Sscan(strings.TrimSuffix(s, "Mi"), &bs)
				if strings.HasSuffix(s, "Mi") {
					bs <<= 20
				}
			}
			for _, m := range b.Blocks {
				ck := m.BlockChecksum
				data, err := os.ReadFile(filepath.Join(volDir, "blocks", ck[0:2], ck[2:4], ck+".blk"))
				check(err, ck)
				var r io.Reader
				switch b.CompressionMethod {
				case "lz4":
					r = lz4.NewReader(bytes.NewReader(data))
				case "gzip":
					r, err = gzip.NewReader(bytes.NewReader(data))
					check(err, ck)
				case "none":
					r = bytes.NewReader(data)
				}
				plain, err := io.ReadAll(r)
				check(err, "decompress "+ck)
				sum := sha512.Sum512(plain)
				if got := hex.EncodeToString(sum[:])[:64]; got != ck || int64(len(plain)) != bs {
					fmt.Printf("FAIL block %s: content hashes to %s, %d bytes\n", ck, got, len(plain))
					os.Exit(1)
				}
				blocks++
			}
		}
		check(err, "marshal "+p)
		if !bytes.Equal(out, raw) {
			fmt.Printf("FAIL %s re-marshals differently:\n ours: %s\n go:   %s\n", p, raw, out)
			os.Exit(1)
		}
		files++
		return nil
	})
	fmt.Printf("OK: %d cfg files decode and re-marshal byte-identically in Go, %d block references decompress and verify\n", files, blocks)
}
