// Package vcsimtest runs govmomi's vCenter simulator (vcsim) on the
// loopback interface for tests and the bench: a datacenter DC0 with one
// datastore LocalDS_0 whose folder is a local directory, behind a TLS
// proxy that counts the datastore bytes it serves and records which
// requests carried the session cookie. VMs are made with the vSphere API
// (CreateVM, Reconfigure, PowerOn), their disks from image files written
// into the datastore's folder beforehand.
package vcsimtest

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Names of the simulated inventory.
const (
	Datacenter = "DC0"
	Datastore  = "LocalDS_0"
	User       = "migrator@vsphere.local"
)

// Server is a running simulator.
type Server struct {
	// URL is the proxy's https://127.0.0.1:PORT; Host its host:port.
	URL, Host string
	// Dir is the datastore's folder on the local disk.
	Dir string
	// Password is the one login the simulator accepts (User's).
	Password string
	// CAFile is a PEM file with the proxy's certificate.
	CAFile string

	// FolderBytes counts the body bytes of datastore file answers;
	// FolderRequests the requests; NoCookie the datastore requests that
	// came without the session cookie.
	FolderBytes    atomic.Int64
	FolderRequests atomic.Int64
	NoCookie       atomic.Int64

	mu       sync.Mutex
	byPath   map[string]int64
	hook     func(r *http.Request)
	answer   func(w http.ResponseWriter, r *http.Request) bool
	model    *simulator.Model
	sim      *simulator.Server
	proxy    *httptest.Server
	client   *vim25.Client
	finder   *find.Finder
	tmp      string
	stopOnce sync.Once
}

// Start starts a simulator whose only valid login is User with password.
func Start(ctx context.Context, password string) (*Server, error) {
	m := simulator.VPX()
	m.Machine = 0
	m.Autostart = false
	if err := m.Create(); err != nil {
		return nil, err
	}
	// vcsim itself serves plain HTTP on loopback; the proxy in front is
	// the one TLS hop, as between a client and a real vCenter.
	m.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(User, password)}
	sim := m.Service.NewServer()
	s := &Server{model: m, sim: sim, Password: password, byPath: map[string]int64{}}
	ds := m.Map().Any("Datastore").(*simulator.Datastore)
	s.Dir = ds.Info.GetDatastoreInfo().Url

	target := &url.URL{Scheme: "http", Host: sim.URL.Host}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	rp.ErrorLog = log.New(io.Discard, "", 0) // a client that hung up is no news
	s.proxy = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		answer := s.answer
		s.mu.Unlock()
		if answer != nil && answer(w, r) {
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/folder/") {
			rp.ServeHTTP(w, r)
			return
		}
		s.FolderRequests.Add(1)
		if c, err := r.Cookie(soap.SessionCookieName); err != nil || c.Value == "" {
			s.NoCookie.Add(1)
		}
		s.mu.Lock()
		hook := s.hook
		s.mu.Unlock()
		if hook != nil {
			hook(r)
		}
		cw := &countingWriter{ResponseWriter: w}
		rp.ServeHTTP(cw, r)
		s.FolderBytes.Add(cw.n)
		s.mu.Lock()
		s.byPath[strings.TrimPrefix(r.URL.Path, "/folder/")] += cw.n
		s.mu.Unlock()
	}))
	s.proxy.EnableHTTP2 = false
	s.proxy.StartTLS()
	s.URL = s.proxy.URL
	s.Host = strings.TrimPrefix(s.proxy.URL, "https://")

	tmp, err := os.MkdirTemp("", "vcsimtest-")
	if err != nil {
		s.Close()
		return nil, err
	}
	s.tmp = tmp
	s.CAFile = filepath.Join(tmp, "ca.pem")
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.proxy.Certificate().Raw})
	if err := os.WriteFile(s.CAFile, cert, 0o644); err != nil {
		s.Close()
		return nil, err
	}

	u, _ := soap.ParseURL(s.Host)
	sc := soap.NewClient(u, true)
	c, err := vim25.NewClient(ctx, sc)
	if err != nil {
		s.Close()
		return nil, err
	}
	if err := session.NewManager(c).Login(ctx, url.UserPassword(User, password)); err != nil {
		s.Close()
		return nil, err
	}
	s.client = c
	s.finder = find.NewFinder(c, false)
	dc, err := s.finder.Datacenter(ctx, Datacenter)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.finder.SetDatacenter(dc)
	return s, nil
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Close stops the proxy and the simulator and removes the datastore.
func (s *Server) Close() {
	s.stopOnce.Do(func() {
		if s.proxy != nil {
			s.proxy.Close()
		}
		s.sim.Close()
		s.model.Remove()
		if s.tmp != "" {
			os.RemoveAll(s.tmp)
		}
	})
}

// Client is an API client logged in as User.
func (s *Server) Client() *vim25.Client { return s.client }

// Hook, if set, runs before each datastore request is served.
func (s *Server) Hook(f func(r *http.Request)) {
	s.mu.Lock()
	s.hook = f
	s.mu.Unlock()
}

// Intercept, if set, sees every request (the API's and the datastore's)
// before the simulator does, and answers it itself when it returns true:
// a redirect, a trickle. A request it answers is not counted.
func (s *Server) Intercept(f func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	s.answer = f
	s.mu.Unlock()
}

// SetDatastoreType makes the datastore say it is of type t ("vsan",
// "VVOL", ...) in its summary, as vCenter tells it.
func (s *Server) SetDatastoreType(t string) {
	m := s.model.Map()
	ds := m.Any("Datastore").(*simulator.Datastore)
	m.WithLock(&simulator.Context{Context: context.Background(), Map: m}, ds, func() { ds.Summary.Type = t })
}

// Served is what the datastore sent of each file, by its path there.
func (s *Server) Served() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for k, v := range s.byPath {
		out[k] = v
	}
	return out
}

// ResetCounts sets the counters back to zero.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	s.byPath = map[string]int64{}
	s.mu.Unlock()
	s.FolderBytes.Store(0)
	s.FolderRequests.Store(0)
	s.NoCookie.Store(0)
}

// SourceURL is the vsphere:// URL of a VM in folder (may be empty).
func (s *Server) SourceURL(folder, name string) string {
	p := "vsphere://" + s.Host + "/" + Datacenter + "/vm/"
	if folder != "" {
		p += folder + "/"
	}
	return p + name
}

// Put copies a local file into the datastore at rel ("web01/web01.vmdk").
func (s *Server) Put(local, rel string) error {
	dst := filepath.Join(s.Dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(local)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	// Holes stay holes: copy the data, seek over zeros.
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	var off int64
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			if string(buf[:n]) != string(zero[:n]) {
				if _, err := out.WriteAt(buf[:n], off); err != nil {
					out.Close()
					return err
				}
			}
			off += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			out.Close()
			return rerr
		}
	}
	if err := out.Truncate(off); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Disk is a virtual disk of a VM to make.
type Disk struct {
	// Chain are the disk's descriptors in the datastore, top first
	// ("web01/web01-000001.vmdk", "web01/web01.vmdk"); the files must be
	// there already (Put).
	Chain []string
	// Capacity is the virtual size in bytes.
	Capacity int64
	// Mode is the disk mode (default persistent).
	Mode string
	// NVMe puts the disk on an NVMe controller instead of SCSI.
	NVMe bool
}

// VM is a virtual machine to make.
type VM struct {
	Name string
	// Folder is a folder under the datacenter's vm folder ("" for the vm
	// folder itself), made when missing.
	Folder   string
	Firmware string // bios (default) or efi
	GuestID  string // default otherLinux64Guest
	Disks    []Disk
	PowerOn  bool
}

// AddVM makes the VM with the API, as an administrator would.
func (s *Server) AddVM(ctx context.Context, v VM) error {
	c := s.client
	dc, err := s.finder.Datacenter(ctx, Datacenter)
	if err != nil {
		return err
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	folder := folders.VmFolder
	if v.Folder != "" {
		for _, name := range strings.Split(v.Folder, "/") {
			sub, err := s.finder.Folder(ctx, path.Join(folder.InventoryPath, name))
			if err != nil {
				sub, err = folder.CreateFolder(ctx, name)
				if err != nil {
					return err
				}
				sub.InventoryPath = path.Join(folder.InventoryPath, name)
			}
			folder = sub
		}
	}
	pool, err := s.finder.ResourcePool(ctx, "/"+Datacenter+"/host/DC0_C0/Resources")
	if err != nil {
		return err
	}
	guest := v.GuestID
	if guest == "" {
		guest = "otherLinux64Guest"
	}
	fw := v.Firmware
	if fw == "" {
		fw = "bios"
	}
	spec := types.VirtualMachineConfigSpec{
		Name: v.Name, GuestId: guest, Firmware: fw, NumCPUs: 1, MemoryMB: 256,
		Files: &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s] %s/%s.vmx", Datastore, v.Name, v.Name)},
		DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
				VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 1000}, BusNumber: 0}, SharedBus: types.VirtualSCSISharingNoSharing}}},
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: &types.VirtualNVMEController{
				VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 31000}, BusNumber: 0}}},
		},
	}
	task, err := folder.CreateVM(ctx, spec, pool, nil)
	if err != nil {
		return err
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		return fmt.Errorf("CreateVM %s: %w", v.Name, err)
	}
	vm := object.NewVirtualMachine(c, info.Result.(types.ManagedObjectReference))
	devs, err := vm.Device(ctx)
	if err != nil {
		return err
	}
	var scsi, nvme int32
	for _, d := range devs {
		switch d.(type) {
		case *types.ParaVirtualSCSIController:
			scsi = d.GetVirtualDevice().Key
		case *types.VirtualNVMEController:
			nvme = d.GetVirtualDevice().Key
		}
	}
	var change []types.BaseVirtualDeviceConfigSpec
	units := map[int32]int32{}
	for i, d := range v.Disks {
		ctrl := scsi
		if d.NVMe {
			ctrl = nvme
		}
		unit := units[ctrl]
		units[ctrl]++
		if ctrl == scsi && unit == 7 {
			unit = units[ctrl]
			units[ctrl]++
		}
		mode := d.Mode
		if mode == "" {
			mode = string(types.VirtualDiskModePersistent)
		}
		var back *types.VirtualDiskFlatVer2BackingInfo
		for j := len(d.Chain) - 1; j >= 0; j-- {
			b := &types.VirtualDiskFlatVer2BackingInfo{
				VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: fmt.Sprintf("[%s] %s", Datastore, d.Chain[j])},
				DiskMode:                     mode, ThinProvisioned: types.NewBool(true), Parent: back,
			}
			if back != nil {
				b.DeltaDiskFormat = "nativeFormat"
			}
			back = b
		}
		u := unit
		disk := &types.VirtualDisk{
			VirtualDevice:   types.VirtualDevice{Key: int32(-100 - i), ControllerKey: ctrl, UnitNumber: &u, Backing: back},
			CapacityInBytes: d.Capacity, CapacityInKB: d.Capacity / 1024,
		}
		change = append(change, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: disk})
	}
	if len(change) > 0 {
		task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: change})
		if err != nil {
			return err
		}
		if err := task.Wait(ctx); err != nil {
			return fmt.Errorf("adding the disks of %s: %w", v.Name, err)
		}
	}
	if v.PowerOn {
		task, err := vm.PowerOn(ctx)
		if err != nil {
			return err
		}
		if err := task.Wait(ctx); err != nil {
			return err
		}
	}
	return nil
}

// VirtualMachine finds a VM by name.
func (s *Server) VirtualMachine(ctx context.Context, name string) (*object.VirtualMachine, error) {
	return s.finder.VirtualMachine(ctx, name)
}

// Snapshots are the names of a VM's snapshots.
func (s *Server) Snapshots(ctx context.Context, name string) ([]string, error) {
	vm, err := s.VirtualMachine(ctx, name)
	if err != nil {
		return nil, err
	}
	var m mo.VirtualMachine
	if err := vm.Properties(ctx, vm.Reference(), []string{"snapshot"}, &m); err != nil {
		return nil, err
	}
	var out []string
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(ts []types.VirtualMachineSnapshotTree) {
		for _, t := range ts {
			out = append(out, t.Name)
			walk(t.ChildSnapshotList)
		}
	}
	if m.Snapshot != nil {
		walk(m.Snapshot.RootSnapshotList)
	}
	return out, nil
}

// Snapshot takes a snapshot of a VM (a user's, before the migration).
func (s *Server) Snapshot(ctx context.Context, vmName, name string) error {
	vm, err := s.VirtualMachine(ctx, vmName)
	if err != nil {
		return err
	}
	task, err := vm.CreateSnapshot(ctx, name, "", false, false)
	if err != nil {
		return err
	}
	return task.Wait(ctx)
}
